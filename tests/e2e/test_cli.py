"""The CLI's contracts: JSON shapes, exit codes, logs, schema, lock commands, the agent API."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import httpx
import pytest

from tests.e2e.conftest import CORRAL, Fleet, processes_of


def test_status_json_has_the_documented_shape(fleet: Fleet) -> None:
    fleet.ok("apply")
    data = fleet.status()
    service = data["services"][0]
    assert set(service) >= {"name", "release", "desired", "ready", "route", "rollout", "instances"}
    assert service["route"] == f"http://127.0.0.1:{fleet.port}"
    assert service["rollout"] is None
    for instance in service["instances"]:
        assert set(instance) >= {"id", "release", "state", "health", "address", "image"}
        assert instance["image"].startswith("sha256:")
        assert instance["health"] == "ready"


@pytest.mark.slow  # over ~8 s: in `make test`, not the fast subset
def test_logs_show_every_instance_also_replaced_ones(fleet: Fleet) -> None:
    fleet.ok("apply")
    first = {i["id"] for i in fleet.status()["services"][0]["instances"]}
    fleet.set_version("v2")
    fleet.ok("apply")
    logs = fleet.ok("logs", "web", "--tail", "20").stdout
    for instance_id in first:
        assert f"{instance_id} r1 | {instance_id} v1 (r1) listening" in logs
        assert f"{instance_id} r1 | {instance_id} stopped" in logs  # graceful SIGTERM
    assert "v2 (r2) listening" in logs
    only_r2 = fleet.ok("logs", "web", "--release", "r2", "--grep", "listening", "--json").stdout
    rows = [json.loads(line) for line in only_r2.splitlines()]
    assert len(rows) == 3 and {r["release"] for r in rows} == {"r2"}
    assert all("listening" in r["line"] and r["service"] == "web" for r in rows)


def test_validate_schema_and_missing_copy_source(fleet: Fleet) -> None:
    assert "is valid" in fleet.ok("validate").stdout
    schema = json.loads(
        subprocess.run([CORRAL, "schema"], capture_output=True, text=True, check=True).stdout
    )
    assert "services" in schema["properties"]
    shutil.rmtree(fleet.dir / "app")
    result = fleet.run("apply")
    assert result.returncode == 2
    assert "images.app.copy[0].src" in result.stderr and "corral.yaml:" in result.stderr
    assert processes_of(fleet.home) == []


def test_missing_bwrap_is_exit_2_naming_the_package(fleet: Fleet) -> None:
    env = {**fleet.env, "PATH": "/nonexistent"}
    result = subprocess.run(
        [CORRAL, "apply", "-f", str(fleet.spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "bubblewrap" in result.stderr
    assert processes_of(fleet.home) == []


@pytest.mark.slow  # over ~5 s: in `make test`, not the fast subset
def test_saved_plan_applies_and_is_refused_once_stale(fleet: Fleet) -> None:
    plan_file = fleet.home / "plan.json"
    fleet.ok("plan", "-out", str(plan_file))
    fleet.ok("apply", str(plan_file))
    assert fleet.status()["services"][0]["release"] == "r1"
    fleet.set_version("v2")
    fleet.ok("plan", "-out", str(plan_file))
    fleet.edit_spec("GREETING: hello", "GREETING: changed")
    fleet.ok("apply")  # the recorded state moves on after the plan was saved
    stale = fleet.run("apply", str(plan_file))
    assert stale.returncode == 2
    assert "changed since this plan was made" in stale.stderr


def test_lock_status_and_release_of_a_dead_holder(fleet: Fleet) -> None:
    assert json.loads(fleet.ok("lock", "status", "--json").stdout) == {"locked": False}
    fleet.ok("apply")
    fleet.ok("agent", "stop")
    # a lease left by a holder that died: `lock release` frees it
    script = (
        "import sys, time; from corral.state.open import open_state; "
        "from corral.state.records import LockInfo; from pathlib import Path; "
        "s = open_state(None, 'hello/dev', Path(sys.argv[1])); "
        "s.acquire_lock(LockInfo(holder_id='ghost', user='ghost', host='elsewhere', pid=1, "
        "command='corral apply', message='left behind', since=time.time()), ttl=0.1)"
    )
    subprocess.run([sys.executable, "-c", script, str(fleet.home)], check=True)
    status = json.loads(fleet.ok("lock", "status", "--json").stdout)
    assert status["locked"] and status["user"] == "ghost"
    assert status["message"] == "left behind"
    assert "ghost" in fleet.ok("lock", "release").stdout
    assert json.loads(fleet.ok("lock", "status", "--json").stdout) == {"locked": False}


def test_agent_serves_its_openapi_document(fleet: Fleet) -> None:
    fleet.ok("agent", "start")
    socket_path = next(fleet.home.rglob("api.sock"))
    transport = httpx.HTTPTransport(uds=str(socket_path))
    with httpx.Client(transport=transport, base_url="http://agent") as client:
        document = client.get("/openapi.json").json()
        assert {"/v1/status", "/v1/applies", "/v1/agent/restart"} <= set(document["paths"])
        assert client.get("/v1/status").json() == {"services": []}


def test_events_follow_streams_json_lines(fleet: Fleet) -> None:
    fleet.ok("lock", "status")  # the state exists before the follower opens it
    follower = fleet.popen("events", "--follow", "--json", "--kind", "apply.")
    try:
        fleet.ok("apply")
        assert follower.stdout is not None
        kinds = []
        for _ in range(10):
            line = follower.stdout.readline()
            if not line:
                break
            kinds.append(json.loads(line)["kind"])
            if kinds[-1] == "apply.succeeded":
                break
    finally:
        follower.kill()
        _, errors = follower.communicate(timeout=10)
    assert kinds[:1] == ["apply.started"] and kinds[-1] == "apply.succeeded", errors
