"""The day-one walk through the real CLI: apply, serve, roll under load, roll back, destroy."""

from __future__ import annotations

import json
import time

import psutil

from tests.e2e.conftest import Fleet, Load, processes_of


def serving_instances(fleet: Fleet, requests: int = 30) -> set[str]:
    return {fleet.get()["instance"] for _ in range(requests)}


def test_apply_serves_through_the_router_and_rolls_v2_with_zero_failures(fleet: Fleet) -> None:
    plan = fleet.ok("plan")
    assert 'service "web"' in plan.stdout and "3 to add" in plan.stdout
    fleet.ok("apply")
    status = fleet.status()
    web = status["services"][0]
    assert (web["name"], web["release"], web["desired"], web["ready"]) == ("web", "r1", 3, 3)
    assert len(serving_instances(fleet)) == 3  # law 6: every ready instance gets traffic
    v1_ids = {i["id"] for i in web["instances"]}

    fleet.set_version("v2")
    plan = fleet.ok("plan")
    assert "-/+" in plan.stdout and "image" in plan.stdout and "forces replacement" in plan.stdout

    with Load(fleet.url, clients=4) as load:
        time.sleep(0.3)
        result = fleet.run("apply")
        time.sleep(0.3)
    assert result.returncode == 0, result.stderr
    assert load.failed == 0, dict(load.errors)  # law 6: no request dropped during the roll-out
    assert load.ok > 50
    assert "failed" in result.stdout  # the measured line: requests served, how many failed
    web = fleet.status()["services"][0]
    assert web["release"] == "r2" and web["ready"] == 3
    assert {i["release"] for i in web["instances"]} == {"r2"}
    # law 1: the change made a new release and new instances; none of r1 was changed in place
    assert not v1_ids & {i["id"] for i in web["instances"]}
    assert {fleet.get()["version"] for _ in range(10)} == {"v2"}


def test_plan_json_and_history(fleet: Fleet) -> None:
    data = json.loads(fleet.ok("plan", "--json").stdout)
    assert data["summary"] == {"add": 3, "change": 0, "destroy": 0}
    assert data["actions"][0]["service"] == "web"
    assert data["actions"][0]["action"] == "create"
    fleet.ok("apply")
    fleet.edit_spec("GREETING: hello", "GREETING: hi")
    data = json.loads(fleet.ok("plan", "--json").stdout)
    action = data["actions"][0]
    assert (action["action"], action["from_release"], action["to_release"]) == (
        "replace",
        "r1",
        "r2",
    )
    assert any(r.get("attribute") == "env.GREETING" for r in action["reasons"])
    fleet.ok("apply")
    history = json.loads(fleet.ok("history", "web", "--json").stdout)
    assert [r["release"] for r in history["releases"]] == ["r1", "r2"]
    assert history["current"] == "r2"
    again = json.loads(fleet.ok("plan", "--json").stdout)
    assert again["actions"] == []


def test_release_that_never_gets_healthy_is_rolled_back(fleet: Fleet) -> None:
    fleet.ok("apply")
    fleet.edit_spec("http: {path: /healthz}", "http: {path: /never-there}")
    fleet.edit_spec("start_timeout: 10s", "start_timeout: 1s")
    with Load(fleet.url, clients=2) as load:
        result = fleet.run("apply")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rolled back to r1" in result.stdout + result.stderr
    assert load.failed == 0, dict(load.errors)
    web = fleet.status()["services"][0]
    assert web["release"] == "r1" and web["ready"] == 3
    assert {i["release"] for i in web["instances"]} == {"r1"}
    events = json.loads(fleet.ok("events", "--json", "--limit", "200").stdout)["events"]
    assert any(e["kind"] == "rollout.rolled_back" for e in events)
    assert any(e["kind"] == "instance.unhealthy" and "never-there" in e["message"] for e in events)


def test_command_that_dies_on_start_rolls_back_with_exit_1(fleet: Fleet) -> None:
    fleet.ok("apply")
    fleet.edit_spec("    image: app\n", '    image: app\n    command: ["/usr/bin/false"]\n')
    result = fleet.run("apply")
    assert result.returncode == 1
    web = fleet.status()["services"][0]
    assert web["release"] == "r1" and web["ready"] == 3


def test_destroy_leaves_no_process(fleet: Fleet) -> None:
    fleet.ok("apply")
    pids = fleet.instance_pids()
    assert len(pids) == 3
    fleet.ok("destroy")
    for pid in pids.values():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert fleet.status()["services"] == []
    fleet.ok("agent", "stop")
    assert processes_of(fleet.home) == []


def test_bad_spec_is_exit_2_and_starts_nothing(fleet: Fleet) -> None:
    fleet.edit_spec("replicas: 3", "replicas: three")
    result = fleet.run("apply")
    assert result.returncode == 2
    assert "corral.yaml:" in result.stderr and "services.web.replicas" in result.stderr
    assert "Traceback" not in result.stderr
    assert processes_of(fleet.home) == []


def test_route_port_taken_is_exit_2_and_starts_nothing(fleet: Fleet) -> None:
    import socket

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", fleet.port))
    blocker.listen(1)
    try:
        result = fleet.run("apply")
    finally:
        blocker.close()
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(fleet.port) in result.stderr
    assert fleet.instance_pids() == {}
