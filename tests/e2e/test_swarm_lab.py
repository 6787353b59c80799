"""The swarm lab itself (tests/swarm_lab.py): a real 3-node swarm whose tasks answer from the
root namespace, node losses that are real, and a teardown that leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.swarm_lab import DATA, FREEZER, RECORDS, Node, SwarmLab, http_get, unavailable

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.swarm, pytest.mark.skipif(bool(unavailable()), reason=str(unavailable()))]


@pytest.fixture(scope="module")
def own_lab() -> Iterator[SwarmLab]:
    """A lab of this module's own: these tests check the lab itself, so what earlier tests did
    to the session's lab (nodes killed, rejoined, tasks moved) must not show here."""
    with SwarmLab(nodes=3) as lab:
        yield lab


@pytest.fixture
def swarm(own_lab: SwarmLab) -> Iterator[SwarmLab]:
    yield own_lab
    own_lab.heal_all()


SERVE = "mkdir -p /tmp/w; hostname > /tmp/w/index.html; exec httpd -f -p 8080 -h /tmp/w"


def serve(lab: SwarmLab, name: str, *mode: str) -> list[tuple[str, int]]:
    """A busybox web service published in host mode; its endpoints once all 3 tasks run."""
    lab.import_busybox("lab-web:1")
    lab.manager_node.docker(
        *("service", "create", "-d", "--name", name, *mode, "--stop-signal", "SIGKILL"),
        *("--publish", "mode=host,target=8080", "lab-web:1", "sh", "-c", SERVE),
    )
    for _ in range(300):
        endpoints = lab.endpoints(name)
        if len(endpoints) == 3:
            return endpoints
        time.sleep(0.2)
    raise AssertionError(f"{name} did not get 3 running tasks: {endpoints}")


def answers(ip: str, port: int) -> bool:
    try:
        http_get(f"http://{ip}:{port}/", timeout=2)
    except OSError:
        return False
    return True


def traces(lab_id: str) -> list[str]:
    """Everything of the lab that could outlive it, as readable strings."""
    found = [line for line in subprocess.getoutput("ip netns list").splitlines() if lab_id in line]
    found += [line for line in subprocess.getoutput("ip -o link").splitlines() if lab_id in line]
    found += [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if lab_id in line
    ]
    found += [str(p) for p in Path("/run").glob(f"{lab_id}*")]
    found += [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{lab_id}*")]
    found += [str(p) for p in (DATA / lab_id, RECORDS / f"{lab_id}.json") if p.exists()]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if lab_id in Path(f"/proc/{pid}/cmdline").read_text():
                found.append(f"process {pid}")
        except OSError:
            continue
    return found


def test_every_node_serves_its_host_mode_port_to_the_root_namespace(swarm: SwarmLab) -> None:
    endpoints = serve(swarm, "everywhere", "--mode", "global")
    assert {ip for ip, _ in endpoints} == {node.ip for node in swarm.nodes}
    served_by = {http_get(f"http://{ip}:{port}/").strip() for ip, port in endpoints}
    assert len(served_by) == 3  # three different task containers answered


def test_a_cut_node_is_unreachable_until_healed(swarm: SwarmLab) -> None:
    endpoints = serve(swarm, "cuttable", "--mode", "global")
    worker = swarm.node(3)
    port = dict(endpoints)[worker.ip]
    swarm.cut(worker)
    assert swarm.is_cut(worker) and not answers(worker.ip, port)
    assert swarm.processes(worker)  # a network loss: the node itself still runs
    swarm.heal(worker)
    assert answers(worker.ip, port)


def test_a_killed_node_loses_its_engine_and_its_containers(swarm: SwarmLab) -> None:
    endpoints = serve(swarm, "killable", "--mode", "global")
    worker: Node = swarm.node(2)
    port = dict(endpoints)[worker.ip]
    assert len(swarm.processes(worker)) > 3  # dockerd, containerd, a shim, the task
    swarm.kill_node(worker)
    assert swarm.processes(worker) == []
    assert not answers(worker.ip, port)
    assert subprocess.run(["docker", "-H", worker.host, "info"], capture_output=True).returncode
    swarm.heal(worker)  # the engine comes back with its swarm state and rejoins
    assert worker.docker("info", "-f", "{{.Swarm.LocalNodeState}}").strip() == "active"


def test_heal_all_leaves_exactly_the_labs_nodes_after_a_node_rejoined(swarm: SwarmLab) -> None:
    """A node that rejoins is a new entry; its old one, Down, would still get global tasks."""
    worker, manager = swarm.node(3), swarm.manager_node
    token = manager.docker("swarm", "join-token", "-q", "worker").strip()
    worker.docker("swarm", "leave", "--force")
    worker.docker(
        *("swarm", "join", "--token", token, "--advertise-addr", worker.ip),
        *("--listen-addr", f"{worker.ip}:2377", f"{manager.ip}:2377"),
    )
    assert [name for _, name, _ in swarm.swarm_nodes()].count(worker.name) == 2
    swarm.heal_all()
    entries = swarm.swarm_nodes()
    assert sorted(name for _, name, _ in entries) == sorted(node.name for node in swarm.nodes)
    assert {status for _, _, status in entries} == {"Ready"}


def test_teardown_leaves_nothing_even_when_the_test_fails() -> None:
    lab = SwarmLab(nodes=2)
    with pytest.raises(RuntimeError, match="a failing test"), lab:
        lab.import_busybox("lab-web:1")
        assert traces(lab.id)
        raise RuntimeError("a failing test")
    assert traces(lab.id) == []
    assert not (FREEZER / lab.node(1).name).exists()


def test_down_removes_a_lab_whose_owner_was_killed() -> None:
    command = [sys.executable, "-m", "tests.swarm_lab"]
    owner = subprocess.Popen(
        [*command, "up", "--nodes", "1"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        lines = [owner.stdout.readline() for _ in range(2)]
        lab_id = lines[-1].split()[1]
        assert lines[-1].startswith("lab ") and traces(lab_id)
    finally:
        owner.send_signal(signal.SIGKILL)  # no teardown runs: the lab is left behind
        owner.wait(30)
        assert owner.stdout is not None
        owner.stdout.close()
    status = subprocess.run([*command, "status"], cwd=ROOT, capture_output=True, text=True)
    assert f"{lab_id}  nodes=1" in status.stdout and "owner gone" in status.stdout
    down = subprocess.run([*command, "down"], cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert f"removed {lab_id}" in down.stdout, down.stderr
    assert traces(lab_id) == []
