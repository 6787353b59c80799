"""The dashboard's API over the agent's real TCP listener, against a real fleet.

The agent is started by the CLI with CORRAL_UI_PORT set; tokens come from `corral ui token`.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CORRAL, Fleet, free_port

ROLLING = """      type: rolling
      max_surge: 1
      max_unavailable: 0"""
CANARY_WAITING = """      type: canary
      steps:
        - set_weight: 34
        - pause: {}"""


def with_ui(fleet: Fleet) -> str:
    """Give the fleet's agent a TCP listener; returns its base URL."""
    port = free_port()
    fleet.env["CORRAL_UI_PORT"] = str(port)
    return f"http://127.0.0.1:{port}"


def ui(fleet: Fleet, *args: str) -> str:
    """`corral ui …` (tokens belong to the home, not to a spec: no --file)."""
    done = subprocess.run(
        [CORRAL, "ui", *args], env=fleet.env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def token(fleet: Fleet, name: str) -> str:
    return ui(fleet, "token", "create", name).strip()


def events(fleet: Fleet) -> list[dict[str, Any]]:
    return json.loads(fleet.ok("events", "--json", "--limit", "1000").stdout)["events"]  # type: ignore[no-any-return]


@pytest.mark.slow  # over ~5 s: in `make test`, not the fast subset
def test_reads_are_open_actions_need_a_token_and_name_it(fleet: Fleet) -> None:
    base = with_ui(fleet)
    fleet.edit_spec(ROLLING, CANARY_WAITING)
    fleet.ok("apply")
    fleet.set_version("v2")
    assert fleet.run("apply").returncode == 0  # the canary waits for a person at 34 %
    with httpx.Client(base_url=base, timeout=10) as client:
        overview = client.get("/v1/fleet").json()
        web = overview["services"][0]
        assert web["name"] == "web" and web["driver"] == "local"
        assert len(web["instances"]) >= 3
        assert "<title>corral</title>" in client.get("/ui").text
        assert client.get("/v1/rollouts/web").json()["awaiting_promotion"] is True

        # DNS rebinding: a foreign name in Host is refused even for reads
        assert client.get("/v1/fleet", headers={"Host": "evil.example"}).status_code == 421

        abort = "/v1/rollouts/web/abort"
        assert client.post(abort, json={}).status_code == 401
        revoked = token(fleet, "old")
        ui(fleet, "token", "revoke", "old")
        assert client.post(abort, json={}, headers=bearer(revoked)).status_code == 401
        valid = token(fleet, "release-bot")
        listed = json.loads(ui(fleet, "token", "ls", "--json"))
        assert [t["name"] for t in listed["tokens"]] == ["release-bot"]
        foreign = {**bearer(valid), "Origin": "http://evil.example"}
        assert client.post(abort, json={}, headers=foreign).status_code == 403
        assert client.get("/v1/rollouts/web").json()["running"] is True

        own = {**bearer(valid), "Origin": base}
        answer = client.post(abort, json={"who": "not me"}, headers=own)
        assert answer.status_code == 200, answer.text

    aborted = [e for e in events(fleet) if e["kind"] == "rollout.abort"]
    assert [e["actor"] for e in aborted] == ["token:release-bot"]
    deadline = time.monotonic() + 30
    while {i["release"] for i in fleet.status()["services"][0]["instances"]} != {"r1"}:
        assert time.monotonic() < deadline, fleet.status()
        time.sleep(0.2)
    assert {fleet.get()["version"] for _ in range(6)} == {"v1"}


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}
