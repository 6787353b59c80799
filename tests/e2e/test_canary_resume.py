"""A canary paused at a later step survives `corral agent restart` and a kill -9 of the agent:
the next agent continues at that step with the same weights (never replaying from step 1),
and `promote` goes on from there."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import Fleet
from tests.e2e.test_crash_and_lock import wait_for
from tests.e2e.test_strategies import agent, events, use_strategy

pytestmark = pytest.mark.e2e

CANARY = """      type: canary
      steps:
        - set_weight: 25
        - pause: {}
        - set_weight: 50
        - pause: {}
        - set_weight: 75"""


def rollout(fleet: Fleet) -> dict[str, Any]:
    with agent(fleet) as client:
        view: dict[str, Any] = client.get("/v1/rollouts/web").json()
    return view


def waits_at_step_4_with_half_the_traffic(fleet: Fleet) -> None:
    wait_for(lambda: rollout(fleet).get("awaiting_promotion"), timeout=30)
    view = rollout(fleet)
    assert (view["step_number"], view["steps"], view["weights"]) == (4, 5, {"r2": 50}), view
    shown = fleet.ok("rollout", "status", "web").stdout
    assert "step 4/5" in shown and "r2 50%" in shown, shown
    # the split the router applies: exactly half to r2 (smooth weighted round-robin)
    # 48 requests are 4 whole cycles of its weights (3, 3, 2, 2, 2 for 2 canaries and 3 old)
    served = [fleet.get()["release"] for _ in range(48)]
    assert served.count("r2") == 24, served


def weights_since(fleet: Fleet, seq: int) -> list[int]:
    return [
        e["data"]["percent"]
        for e in events(fleet)
        if e["seq"] > seq and e["kind"] == "rollout.weights"
    ]


def last_seq(fleet: Fleet) -> int:
    return max(int(e["seq"]) for e in events(fleet))


@pytest.mark.slow
def test_a_paused_canary_resumes_at_its_step_after_restart_and_kill_9(fleet: Fleet) -> None:
    use_strategy(fleet, CANARY)
    fleet.ok("apply")
    fleet.set_version("v2")
    assert fleet.run("apply").returncode == 0  # waits for a person at step 2
    assert rollout(fleet)["step_number"] == 2
    fleet.ok("rollout", "promote", "web")
    wait_for(lambda: rollout(fleet).get("step_number") == 4, timeout=30)
    waits_at_step_4_with_half_the_traffic(fleet)

    mark = last_seq(fleet)
    restarted = fleet.run("agent", "restart")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    waits_at_step_4_with_half_the_traffic(fleet)
    assert weights_since(fleet, mark) == [50]  # set again where it was, never 0 or 25

    mark = last_seq(fleet)
    pid = fleet.agent_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    )
    fleet.ok("agent", "start")
    waits_at_step_4_with_half_the_traffic(fleet)
    assert weights_since(fleet, mark) == [50]

    mark = last_seq(fleet)
    fleet.ok("rollout", "promote", "web")
    wait_for(lambda: fleet.status()["services"][0]["release"] == "r2", timeout=40)
    assert weights_since(fleet, mark) == [75, 100]
    web = fleet.status()["services"][0]
    assert {i["release"] for i in web["instances"]} == {"r2"}
    applies = [e for e in events(fleet) if e["kind"] == "apply.succeeded"]
    assert applies, json.dumps(events(fleet)[-10:])
