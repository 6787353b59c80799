"""The auditor on a real 3-node swarm (tests/swarm_lab.py): each swarm instance is checked
through the engine of the node its task runs on.

- a clean task is `clean`, naming its node and that node's engine (also in `corral audit
  --json`), and says its image files were not re-hashed;
- a file put into the task container's own writable layer (from the node's host: the root is
  read-only, so the engine refuses `docker cp`) is found, with its path as evidence (exit 4);
  a task re-created with an env corral did not launch (`docker service update`) is drift;
- a node that does not answer makes its instance `not audited`, at once, never clean;
- the agent replaces a tampered task with a fresh one (law 8), recording the evidence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.agent.runtime import open_store
from corral.audit.report import AuditStatus, InstanceFinding
from corral.audit.swarm import NOT_REHASHED, SwarmAuditor
from corral.drivers.protocol import ObservedInstance
from corral.paths import Home
from corral.state.protocol import StateStore
from corral.state.records import InstanceRecord, InstanceState
from tests.conformance.swarm_harness import SwarmHarness
from tests.e2e import test_swarm
from tests.e2e.conftest import Fleet as CliFleet
from tests.e2e.test_swarm import events, nodes_of, write
from tests.swarm_lab import Node, SwarmLab, unavailable

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.swarm,
    pytest.mark.skipif(bool(unavailable()), reason=str(unavailable())),
]
ENV = "test"
swarm_fleet = test_swarm.swarm_fleet  # the fixture: a CLI fleet (home, agent) on the lab
SPEC = """project: {project}
environments:
  {env}:
    driver: swarm
    swarm:
      manager: {manager}
      node_engines: {engines}
images:
  app:
    from: scratch
    copy:
      - src: rootfs
        dest: /
services:
  web:
    image: app
    port: 8080
"""


@dataclass
class Fleet:
    harness: SwarmHarness
    store: StateStore
    auditor: SwarmAuditor
    spec: Path

    def audit(self) -> dict[str, InstanceFinding]:
        return {f.instance_id: f for f in self.auditor.audit(self.store)}

    async def start(self, instance_id: str, serial: int, **spec: Any) -> ObservedInstance:
        observed: ObservedInstance = await self.harness.drivers[0].start(
            self.harness.spec(instance_id, serial=serial, **spec)
        )
        self.store.put_instance(
            InstanceRecord(
                id=instance_id, service="web", serial=serial, release=1, state=InstanceState.RUNNING
            )
        )
        return observed

    def cli_audit(self) -> tuple[int, dict[str, Any]]:
        env = {**os.environ, "CORRAL_HOME": str(self.harness.home)}
        corral = str(Path(sys.executable).parent / "corral")
        done = subprocess.run(
            [corral, "audit", "--json", "-f", str(self.spec), "-e", ENV],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        return done.returncode, json.loads(done.stdout)


@pytest.fixture
async def fleet(tmp_path: Path, swarm: SwarmLab) -> AsyncIterator[Fleet]:
    harness = SwarmHarness(tmp_path, swarm)
    driver = harness.driver(ENV)
    home = Home(harness.home)
    store = open_store(home, harness.project("proj"), ENV, None)
    store.get_or_create_release("web", harness.digest, "sha256:c1", {"v": 1}, "test")
    (tmp_path / "rootfs").mkdir()
    spec = tmp_path / "corral.yaml"
    spec.write_text(
        SPEC.format(
            project=harness.project("proj"),
            env=ENV,
            manager=swarm.manager,
            engines=json.dumps(swarm.node_engines),
        )
    )
    auditor = SwarmAuditor(home, driver, harness.store)  # type: ignore[arg-type]
    try:
        yield Fleet(harness, store, auditor, spec)
    finally:
        auditor.close()
        swarm.heal_all()  # first: stopping an instance asks every node's engine
        await harness.cleanup()


def node_named(lab: SwarmLab, name: str | None) -> Node:
    return next(node for node in lab.nodes if node.name == name)


def upper_dir(node: Node, instance_id: str) -> Path:
    """The task container's own writable layer, on the node's disk (this machine's)."""
    client = node.client()
    try:
        mine = {"label": f"io.corral.instance={instance_id}"}
        (container,) = client.api.containers(filters=mine)
        found = client.api.inspect_container(container["Id"])
    finally:
        client.close()
    return Path(found["GraphDriver"]["Data"]["UpperDir"])


async def test_a_clean_task_is_clean_on_its_node_and_a_file_put_in_its_layer_is_found(
    fleet: Fleet, swarm: SwarmLab
) -> None:
    # a Swarm secret's file and the env: what the engine adds for them is not drift
    secrets = {"TOKEN": ("s3cret", "file"), "API_KEY": ("k3y", "env")}
    observed = await fleet.start("web-1", 1, secrets=secrets, env={"MODE": "test"})
    node = node_named(swarm, observed.node)

    clean = fleet.audit()["web-1"]
    assert clean.status is AuditStatus.CLEAN, clean
    assert (clean.node, clean.engine) == (node.name, node.host)
    assert clean.unchecked == (NOT_REHASHED,)
    code, report = fleet.cli_audit()
    assert code == 0, report
    (shown,) = report["instances"]
    assert (shown["status"], shown["node"], shown["engine"]) == ("clean", node.name, node.host)

    (upper_dir(node, observed.instance_id) / "planted").write_text("not from the image")
    tampered = fleet.audit()["web-1"]
    assert tampered.status is AuditStatus.DRIFT
    assert [(f.kind, f.path) for f in tampered.files] == [("added", "/planted")]
    assert "/planted" in tampered.evidence() and tampered.node == node.name
    code, report = fleet.cli_audit()
    assert code == 4 and report["instances"][0]["files"][0]["path"] == "/planted"

    # the service changed behind corral's back: Swarm runs a new task, with an env corral
    # never launched (its value appears only as a keyed hash, law 5)
    (record,) = fleet.harness.drivers[0].records()
    swarm.manager_node.docker("service", "update", "-d", "--env-add", "INJECTED=x", record["name"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        drifted = fleet.audit()["web-1"]
        if drifted.config:
            break
        time.sleep(0.5)
    assert [(f.kind, f.path) for f in drifted.config] == [("env", "env.INJECTED")]
    assert "INJECTED added (hmac " in drifted.config[0].detail and "=x" not in drifted.evidence()


async def test_a_task_whose_node_does_not_answer_is_not_audited_never_clean(
    fleet: Fleet, swarm: SwarmLab
) -> None:
    first = await fleet.start("web-1", 1)
    second = await fleet.start("web-2", 2)  # Swarm spreads: one of the two is on a worker
    on_worker = next(o for o in (first, second) if o.node != swarm.manager_node.name)
    assert fleet.audit()[on_worker.instance_id].status is AuditStatus.CLEAN

    swarm.kill_node(node_named(swarm, on_worker.node))  # its engine and its containers
    found = fleet.audit()
    lost = found[on_worker.instance_id]
    assert lost.status is AuditStatus.NOT_AUDITED, lost
    assert f"node {on_worker.node} does not answer" in lost.not_audited[0]
    other = next(i for i in found.values() if i.instance_id != on_worker.instance_id)
    assert other.status is AuditStatus.CLEAN  # a lost node does not stop the others' audit
    code, report = fleet.cli_audit()  # a fresh process: it must find out which engine is lost
    assert code == 1
    shown = {i["id"]: i for i in report["instances"]}[on_worker.instance_id]
    assert shown["status"] == "not audited" and "does not answer" in shown["not_audited"][0]


def test_the_agent_replaces_a_tampered_task_with_a_fresh_one(
    swarm: SwarmLab, swarm_fleet: CliFleet
) -> None:
    write(swarm_fleet, swarm, "v1", "      type: rolling", replicas=1)
    swarm_fleet.ok("apply", timeout=150)
    ((tampered, node),) = nodes_of(swarm_fleet, swarm).items()
    (upper_dir(node_named(swarm, node), tampered) / "planted").write_text("not from the image")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [e for e in events(swarm_fleet) if e["kind"] == "instance.tampered"]
        running = set(nodes_of(swarm_fleet, swarm))
        if found and running and tampered not in running:
            break
        time.sleep(0.5)
    assert found and found[0]["data"]["instance"] == tampered, found
    assert "added: /planted" in found[0]["data"]["evidence"]
    assert running and tampered not in running, running
