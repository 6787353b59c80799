"""The pure and local parts of the swarm auditor: a container's own layer from the engine's
diff, the hardening a swarm task is held to, and an engine that does not answer (a real
socket that accepts and stays silent) costing one bounded wait, never a hung audit. The
auditor on a real swarm: tests/e2e/test_swarm_audit.py."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.audit.container_diff import diff_findings
from corral.audit.docker_config import compare_container
from corral.audit.node_engines import NodeEngines
from corral.drivers.swarm_engines import SwarmEngines

# what a clean swarm task's own layer shows on this machine's engine (20.10): its init and
# the tmpfs mount point the image lacks
CLEAN = [
    {"Path": "/sbin", "Kind": 1},
    {"Path": "/sbin/docker-init", "Kind": 1},
    {"Path": "/scratch", "Kind": 1},
]
STUBS = {"tmp", "scratch", "sbin/docker-init", "run/secrets/token"}


def test_a_clean_layer_holds_only_the_engines_mount_points() -> None:
    assert diff_findings(CLEAN, STUBS) == []
    assert (
        diff_findings([{"Path": "/run", "Kind": 0}, {"Path": "/run/secrets", "Kind": 1}], STUBS)
        == []
    )


def test_added_changed_and_deleted_paths_are_findings_with_the_path() -> None:
    changes = [
        *CLEAN,
        {"Path": "/planted", "Kind": 1},
        {"Path": "/app/serve.sh", "Kind": 0},
        {"Path": "/bin/busybox", "Kind": 2},
        {"Path": "/sbin", "Kind": 2},  # a mount point's parent deleted is not the engine's doing
    ]
    found = [(f.kind, f.path) for f in diff_findings(changes, STUBS)]
    assert found == [
        ("tampered", "/app/serve.sh"),
        ("removed", "/bin/busybox"),
        ("added", "/planted"),
        ("removed", "/sbin"),
    ]


def test_what_is_inside_a_mount_is_not_the_layers() -> None:
    assert diff_findings([{"Path": "/tmp/x", "Kind": 1}], STUBS) == []


SWARM_HOST = {"ReadonlyRootfs": True, "CapDrop": ["ALL"], "RestartPolicy": {"Name": ""}}
RECORD = {"image_id": "sha256:a", "command": None}
INSPECT = {"Image": "sha256:a", "Config": {"Env": []}, "HostConfig": SWARM_HOST}


def test_a_swarm_task_is_not_held_to_no_new_privileges_but_to_the_rest() -> None:
    assert compare_container(RECORD, INSPECT, key=b"k", no_new_privileges=False) == []
    assert [f.detail for f in compare_container(RECORD, INSPECT, key=b"k")] == [
        "no-new-privileges is off"
    ]
    writable = {**INSPECT, "HostConfig": {**SWARM_HOST, "ReadonlyRootfs": False, "CapDrop": []}}
    details = [
        f.detail for f in compare_container(RECORD, writable, key=b"k", no_new_privileges=False)
    ]
    assert details == ["root filesystem is writable", "capabilities dropped [] ≠ ['ALL']"]


@pytest.fixture
def silent_engine(tmp_path: Path) -> Iterator[str]:
    """A unix socket that accepts connections and never answers: a frozen engine."""
    path = tmp_path / "frozen.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        stop.set()
        thread.join(10)
        for conn in accepted:
            conn.close()
        server.close()


class _Manager(SwarmEngines):
    """A manager that answers with the one thing NodeEngines asks of it (its API version)."""

    def manager(self) -> Any:
        return type("Api", (), {"api_version": "1.41"})()


def test_an_engine_that_does_not_answer_is_reported_after_one_bounded_wait(
    silent_engine: str, tmp_path: Path
) -> None:
    refused = f"unix://{tmp_path / 'gone.sock'}"
    engines = NodeEngines(
        _Manager({"manager": silent_engine, "node_engines": [silent_engine, refused]}),
        timeout=0.5,
    )
    try:
        engines.begin_pass()
        found = engines.of_node("node-x")
        assert found.api is None and found.why is not None
        assert f"{silent_engine}: " in found.why and "does not answer" in found.why
        assert f"{refused}: its engine's socket refuses" in found.why
        again = engines.of_node("node-y")  # the same pass: not asked again
        assert again.why == found.why
    finally:
        engines.close()


class _AnsweringManager(SwarmEngines):
    """A manager engine that says which swarm node it is."""

    def manager(self) -> Any:
        return type("Api", (), {"info": lambda self: {"Swarm": {"NodeID": "mgr"}}})()


def test_a_node_engine_that_does_not_answer_leaves_the_others_reachable(tmp_path: Path) -> None:
    """The driver reaches a task through its node's engine (stop, exec): one lost node must
    not make every other node's tasks unreachable."""
    gone = f"unix://{tmp_path / 'gone.sock'}"
    engines = _AnsweringManager({"node_engines": [gone]})
    assert engines.api_of_node("mgr") is not None
    assert engines.api_of_node("lost-node") is None
