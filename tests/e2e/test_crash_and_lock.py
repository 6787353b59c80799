"""Law 7 (write-ahead) and the lock: kill -9 of the CLI or the agent mid roll-out converges."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from tests.e2e.conftest import Fleet, Load


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def assert_converged(fleet: Fleet, release: str, replicas: int = 3) -> None:
    web = fleet.status()["services"][0]
    assert web["release"] == release
    assert web["ready"] == replicas
    ids = {i["id"] for i in web["instances"]}
    assert len(ids) == replicas and {i["release"] for i in web["instances"]} == {release}
    assert sorted(i["serial"] for i in web["instances"]) == list(range(replicas))
    # no orphan: every sandbox the driver knows of is a live recorded instance
    pids = fleet.instance_pids()
    assert set(pids) == ids
    assert all(psutil.pid_exists(p) for p in pids.values())


def test_kill_of_the_cli_does_not_stop_the_rollout(fleet: Fleet) -> None:
    fleet.ok("apply")
    fleet.set_version("v2")
    cli = fleet.popen("apply")
    wait_for(
        lambda: any(
            i["release"] == "r2" for s in fleet.status()["services"] for i in s["instances"]
        )
    )
    cli.send_signal(signal.SIGKILL)
    cli.communicate(timeout=10)
    wait_for(lambda: fleet.status()["services"][0]["release"] == "r2", timeout=40)
    assert_converged(fleet, "r2")
    again = fleet.ok("apply")
    assert "No changes" in again.stdout


@pytest.mark.parametrize(
    "fault",
    [
        "instance.pending:2",
        # the other journaled steps: in `make test` (each ~8 s), the fast subset keeps one
        *(
            pytest.param(fault, marks=pytest.mark.slow)
            for fault in (
                "instance.spawned:2",
                "instance.started:3",
                "instance.stopping:1",
                "instance.stopped:2",
            )
        ),
    ],
)
def test_agent_killed_at_a_journaled_step_converges_on_next_apply(fleet: Fleet, fault: str) -> None:
    fleet.ok("apply")
    fleet.ok("agent", "stop")
    fleet.set_version("v2")
    crashed = fleet.run("apply", extra_env={"CORRAL_FAULT": fault})
    assert crashed.returncode == 1, crashed.stdout + crashed.stderr  # the agent died under it
    with Load(fleet.url, clients=2, max_seconds=60) as load:
        result = fleet.run("apply")
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(lambda: fleet.status()["services"][0]["release"] == "r2", timeout=40)
    assert_converged(fleet, "r2")
    events = json.loads(fleet.ok("events", "--json", "--limit", "500").stdout)["events"]
    assert any(e["kind"] in ("apply.resumed", "lock.taken_over") for e in events)
    assert load.ok > 0


def test_new_agent_adopts_running_instances_without_restarting_them(fleet: Fleet) -> None:
    fleet.ok("apply")
    before = fleet.instance_pids()
    agent = fleet.agent_pid()
    assert agent is not None
    os.kill(agent, signal.SIGKILL)
    wait_for(
        lambda: (
            not psutil.pid_exists(agent) or psutil.Process(agent).status() == psutil.STATUS_ZOMBIE
        )
    )
    fleet.ok("agent", "start")
    assert_converged(fleet, "r1")
    assert fleet.instance_pids() == before  # adopted, none restarted
    assert len({fleet.get()["instance"] for _ in range(30)}) == 3


@pytest.mark.slow  # over ~5 s: in `make test`, not the fast subset
def test_second_apply_of_another_change_is_locked_and_the_same_change_attaches(
    fleet: Fleet,
) -> None:
    fleet.ok("apply")
    fleet.edit_spec("http: {path: /healthz}", "http: {path: /slow-never}")
    # health never passes within the test: the roll-out holds the lock until it is aborted
    fleet.edit_spec("start_timeout: 10s", "start_timeout: 120s")
    first = fleet.popen("apply", "-m", "first change")
    wait_for(lambda: json.loads(fleet.ok("lock", "status", "--json").stdout)["locked"])
    same = fleet.popen("apply")  # same desired state: attaches and ends like the first
    assert same.stderr is not None
    same_err = wait_for(lambda: (line := same.stderr.readline()) and "Attached" in line and line)
    fleet.edit_spec("GREETING: hello", "GREETING: other")
    other = fleet.run("apply")
    assert other.returncode == 3, other.stdout + other.stderr
    assert "first change" in other.stderr and "corral apply" in other.stderr
    fleet.edit_spec("GREETING: other", "GREETING: hello")
    fleet.ok("rollout", "abort", "web")
    first.communicate(timeout=60)
    same.communicate(timeout=60)
    assert first.returncode == 1  # aborted and rolled back
    assert same.returncode == 1 and "Attached" in same_err
    assert json.loads(fleet.ok("lock", "status", "--json").stdout)["locked"] is False


@pytest.mark.slow  # over ~5 s: in `make test`, not the fast subset
def test_agent_restart_hands_the_route_over_without_refusing_connections(fleet: Fleet) -> None:
    fleet.ok("apply")
    before = fleet.instance_pids()
    old_agent = fleet.agent_pid()
    with Load(fleet.url, clients=4, max_seconds=30) as load:
        time.sleep(0.5)
        restarted = fleet.run("agent", "restart")
        time.sleep(1.0)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    new_agent = fleet.agent_pid()
    assert new_agent is not None and new_agent != old_agent
    assert load.failed == 0, dict(load.errors)
    assert load.ok > 20
    assert fleet.instance_pids() == before  # adopted, none restarted
    assert_converged(fleet, "r1")
