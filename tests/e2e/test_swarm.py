"""`driver: swarm` end to end on a real 3-node swarm (tests/swarm_lab.py), through the real CLI
and agent: the environment `lab` selects the driver and names the lab's engines; corral bakes
the busybox image, loads it into every node's engine, and routes to the tasks' host-mode ports
on the nodes' addresses.

- a canary roll-out across the 3 nodes under load: 0 failed requests;
- a worker lost during a roll-out (network cut, or all its processes killed): its instances
  leave routing, Swarm reschedules them, traffic keeps flowing (only requests in flight on the
  lost node may fail), the loss is in the event log, and the roll-out ends (succeeds or rolls
  back) instead of hanging.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from corral.testing.busybox import fleet_spec, set_version, swarm_engine, write_rootfs
from tests.e2e.conftest import Fleet, Load, free_port, processes_of
from tests.swarm_lab import SwarmLab, unavailable

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.swarm,
    pytest.mark.skipif(bool(unavailable()), reason=str(unavailable())),
]
CLIENTS = 4
CANARY = """      type: canary
      steps:
        - set_weight: 34
        - pause: {duration: 500ms}
        - analysis: {window: 1s, max_error_rate: 0.01, min_requests: 5}
        - set_weight: 67
      bake_window: 500ms
      analysis: {max_error_rate: 0.01, min_requests: 5}"""
CANARY_SLOW = """      type: canary
      steps:
        - set_weight: 34
        - pause: {duration: 5s}
        - set_weight: 67
        - pause: {duration: 5s}
      bake_window: 500ms"""
# what the agent records when a node is lost (src/corral/agent/moves.py, health_watch.py):
# its readiness probes fail (the node cut off) → instance.unhealthy, or Swarm shows the task
# PENDING first (the node marked down) → instance.away; either takes it out of routing at once
LOSS_KINDS = {"instance.unhealthy", "instance.away"}


@pytest.fixture
def swarm_fleet(swarm: SwarmLab) -> Iterator[Fleet]:
    home = Path(tempfile.mkdtemp(prefix="cs-", dir="/tmp"))
    work = home / "work"
    write_rootfs(work)
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_AGENT_TICK": "0.2", "NO_COLOR": "1"}
    env |= {"COLUMNS": "200", "CORRAL_ENV": "lab"}
    for name in ("CORRAL_STATE_URL", "CORRAL_FAULT", "DOCKER_HOST"):
        env.pop(name, None)
    fleet = Fleet(home=home, dir=work, port=free_port(), env=env)
    try:
        yield fleet
    finally:
        fleet.run("destroy", timeout=120)
        fleet.run("agent", "stop", timeout=30)
        for process in processes_of(home):
            with contextlib.suppress(OSError, psutil.Error):
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


def write(fleet: Fleet, lab: SwarmLab, version: str, strategy: str, replicas: int = 3) -> None:
    set_version(fleet.dir, version)
    fleet.spec.write_text(
        fleet_spec(
            project=f"e2e{lab.id}",
            port=fleet.port,
            engine=swarm_engine(lab.manager, lab.node_engines, environment="lab"),
            replicas=replicas,
            interval="200ms",
            start_timeout="60s",
            strategy=strategy,
        )
    )


def events(fleet: Fleet) -> list[dict[str, Any]]:
    return json.loads(fleet.ok("events", "--json", "--limit", "2000").stdout)["events"]  # type: ignore[no-any-return]


def nodes_of(fleet: Fleet, lab: SwarmLab) -> dict[str, str]:
    """Running instance id → the node its task runs on, from the address corral routes to."""
    by_ip = {ip: name for name, ip in lab.node_addresses.items()}
    found = {}
    running = [
        instance
        for service in fleet.status()["services"]
        for instance in service["instances"]
        if instance["state"] == "running"
    ]
    for instance in running:
        address = str(instance.get("address") or "")
        host = address.rsplit(":", 1)[0].removeprefix("http://")
        if host in by_ip:
            found[str(instance["id"])] = by_ip[host]
    return found


def test_a_canary_rolls_across_three_nodes_under_load_with_zero_failures(
    swarm: SwarmLab, swarm_fleet: Fleet
) -> None:
    write(swarm_fleet, swarm, "v1", CANARY)
    swarm_fleet.ok("apply", timeout=150)
    assert set(nodes_of(swarm_fleet, swarm).values()) == set(swarm.node_addresses)
    write(swarm_fleet, swarm, "v2", CANARY)
    with Load(swarm_fleet.url, clients=CLIENTS, max_seconds=150) as load:
        time.sleep(0.5)
        swarm_fleet.ok("apply", timeout=150)
        time.sleep(0.5)
    assert load.failed == 0, dict(load.errors)
    assert load.releases["v1"] > 0 and load.releases["v2"] > 0
    assert swarm_fleet.get()["release"] == "v2"
    kinds = [e["kind"] for e in events(swarm_fleet)]
    assert "rollout.weights" in kinds and "rollout.succeeded" in kinds


@pytest.mark.parametrize("loss", ["cut", "kill_node"])
def test_a_worker_lost_during_a_rollout_is_ejected_and_the_rollout_ends(
    swarm: SwarmLab, swarm_fleet: Fleet, loss: str
) -> None:
    """`cut`: its network lost (processes keep running); `kill_node`: every process of the node
    killed, engine and containers (so its engine does not answer corral either)."""
    write(swarm_fleet, swarm, "v1", CANARY_SLOW)
    swarm_fleet.ok("apply", timeout=150)
    placed = nodes_of(swarm_fleet, swarm)
    lost = swarm.node(3)
    on_lost = {instance for instance, node in placed.items() if node == lost.name}
    assert on_lost, placed
    write(swarm_fleet, swarm, "v2", CANARY_SLOW)
    with Load(swarm_fleet.url, clients=CLIENTS, max_seconds=170) as load:
        rollout = swarm_fleet.popen("apply")
        try:
            time.sleep(3.0)  # the canary's first step is on its way
            began = load.ok + load.failed
            getattr(swarm, loss)(lost)
            out, err = rollout.communicate(timeout=150)  # ends: succeeds or rolls back
        finally:
            if rollout.poll() is None:
                rollout.kill()
                rollout.communicate()
        time.sleep(1.0)
        after = load.ok + load.failed
    outcome = "rolled out" if rollout.returncode == 0 else "rolled back / failed"
    print(f"{loss}: {outcome}; requests {load.ok} ok, {load.failed} failed {dict(load.errors)}")
    # only requests in flight on the lost node may fail: one per client at most
    assert load.failed <= CLIENTS, dict(load.errors)
    assert after - began > 10 * CLIENTS  # traffic kept flowing after the cut
    assert rollout.returncode in (0, 1), f"{out}\n{err}"  # 1: rolled back by the spec's rules
    assert swarm_fleet.get()["release"] in ("v1", "v2")
    assert lost.name not in nodes_of(swarm_fleet, swarm).values()  # no route to the lost node
    losses = [
        e
        for e in events(swarm_fleet)
        if e["kind"] in LOSS_KINDS and (e.get("data") or {}).get("instance") in on_lost
    ]
    assert losses, "no event records the lost node's instances leaving service"
    finished = {e["kind"] for e in events(swarm_fleet)}
    assert finished & {"rollout.succeeded", "rollout.rolled_back", "rollout.failed"}
