"""Central logs on the local driver: every line stamped by its collector with time and
stream, kept across a killed agent and an agent restart, and after its instance is replaced."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.conftest import Fleet

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # two applies, a kill -9, a restart: ~35 s

SAY = "pass  # one line per request would drown the central log"
SAY_LOUDLY = (
    "if self.path.startswith('/say'):\n"
    "            print('said', self.path, file=sys.stderr, flush=True)"
)


def _rows(fleet: Fleet, *args: str) -> list[dict[str, Any]]:
    out = fleet.ok("logs", "web", "--json", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def _say(address: str, what: str) -> None:
    httpx.get(f"http://{address}/say-{what}", timeout=5.0, headers={"Connection": "close"})


def test_logs_since_carry_time_and_stream_across_a_killed_and_restarted_agent(
    fleet: Fleet,
) -> None:
    server = fleet.dir / "app" / "server.py"
    server.write_text(server.read_text().replace(SAY, SAY_LOUDLY))
    fleet.ok("apply")
    first = {i["id"]: i["address"] for i in fleet.status()["services"][0]["instances"]}
    mark = datetime.now(UTC)

    agent = fleet.agent_pid()
    assert agent is not None
    psutil.Process(agent).kill()  # kill -9: the instances and their collectors live on
    psutil.Process(agent).wait(timeout=30)
    witness, address = sorted(first.items())[0]
    _say(address, "while-no-agent-runs")  # straight to the instance: no router now
    fleet.ok("status")  # a new agent adopts the instances
    assert fleet.run("agent", "restart").returncode == 0
    _say(address, "after-restart")
    fleet.set_version("v2")
    fleet.ok("apply")  # replaces every r1 instance

    recent = _rows(fleet, "--since", mark.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    times = [datetime.fromisoformat(r["time"]) for r in recent]
    assert times == sorted(times) and all(t >= mark for t in times), recent  # by time
    said = {(r["instance"], r["stream"], r["line"]) for r in recent if "said" in r["line"]}
    assert said == {
        (witness, "stderr", "said /say-while-no-agent-runs"),
        (witness, "stderr", "said /say-after-restart"),
    }
    lines = {(r["instance"], r["line"]) for r in recent}
    for instance_id in first:  # replaced, and their last words still there
        assert (instance_id, f"{instance_id} stopped") in lines, recent
        early = f"{instance_id} v1 (r1) listening"
        assert not any(line.startswith(early) for _, line in lines)  # before --since
    assert sum("v2 (r2) listening" in r["line"] for r in recent) == 3

    before = _rows(fleet, "--until", mark.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    assert sorted(r["line"].rsplit(" on ", 1)[0] for r in before) == sorted(
        f"{i} v1 (r1) listening" for i in first
    )
    human = fleet.ok("logs", "web", "--since", "10m", "--instance", witness).stdout.splitlines()
    assert human and all(datetime.fromisoformat(line.split()[0]) for line in human)
    assert any(line.endswith("| said /say-while-no-agent-runs") for line in human)
