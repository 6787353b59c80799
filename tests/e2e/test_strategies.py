"""Rolling, blue-green and canary roll-outs through the real CLI, under load, 0 failed requests."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Fleet, Load

ROLLING = """      type: rolling
      max_surge: 1
      max_unavailable: 0"""


def use_strategy(fleet: Fleet, text: str) -> None:
    fleet.edit_spec(ROLLING, text)


def agent(fleet: Fleet) -> httpx.Client:
    socket_path = next(fleet.home.rglob("api.sock"))
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://agent", timeout=10
    )


def events(fleet: Fleet) -> list[dict[str, Any]]:
    return json.loads(fleet.ok("events", "--json", "--limit", "1000").stdout)["events"]  # type: ignore[no-any-return]


def roll_three_times_under_load(fleet: Fleet) -> None:
    fleet.ok("apply")
    for version in ("v2", "v3", "v4"):
        fleet.set_version(version)
        with Load(fleet.url, clients=6, max_seconds=60) as load:
            time.sleep(0.3)
            result = fleet.run("apply")
            time.sleep(0.2)
        assert result.returncode == 0, result.stdout + result.stderr
        assert load.failed == 0, (version, dict(load.errors))
        # a real load ran through the whole roll-out (its rate is measured in bench/, not here)
        assert load.ok >= 100, f"only {load.ok} requests at {load.rate:.0f}/s"
        assert {fleet.get()["version"] for _ in range(6)} == {version}


@pytest.mark.slow  # over ~8 s: in `make test`, not the fast subset
def test_canary_rolls_three_times_under_load_with_zero_failures(fleet: Fleet) -> None:
    use_strategy(
        fleet,
        """      type: canary
      steps:
        - set_weight: 34
        - pause: {duration: 200ms}
        - analysis: {window: 400ms, max_error_rate: 0.01, min_requests: 5}
        - set_weight: 67
      bake_window: 300ms
      analysis: {max_error_rate: 0.01, min_requests: 5}""",
    )
    roll_three_times_under_load(fleet)
    kinds = [e["kind"] for e in events(fleet)]
    assert "rollout.analysis_pass" in kinds and "rollout.weights" in kinds


@pytest.mark.slow  # over ~8 s: in `make test`, not the fast subset
def test_blue_green_rolls_three_times_under_load_with_zero_failures(fleet: Fleet) -> None:
    use_strategy(
        fleet,
        """      type: blue_green
      auto_promote_after: 200ms
      scale_down_delay: 200ms""",
    )
    roll_three_times_under_load(fleet)


@pytest.mark.slow  # over ~8 s: in `make test`, not the fast subset
def test_rolling_rolls_three_times_and_never_drops_below_desired(fleet: Fleet) -> None:
    fleet.ok("apply")
    lowest: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        with agent(fleet) as client:
            while not stop.is_set():
                web = client.get("/v1/status").json()["services"][0]
                lowest.append(sum(1 for i in web["instances"] if i["health"] == "ready"))
                time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        roll_three_times_under_load(fleet)
    finally:
        stop.set()
        sampler.join(timeout=5)
    assert len(lowest) > 20 and min(lowest) >= 3  # max_unavailable: 0 honoured


@pytest.mark.slow  # over ~5 s: in `make test`, not the fast subset
def test_canary_analysis_aborts_a_release_that_fails_20_percent(fleet: Fleet) -> None:
    use_strategy(
        fleet,
        """      type: canary
      steps:
        - set_weight: 10
        - analysis: {window: 1500ms, max_error_rate: 0.05, min_requests: 10}
        - set_weight: 100""",
    )
    fleet.ok("apply")
    fleet.edit_spec("GREETING: hello", 'GREETING: hello\n      FAIL_EVERY: "5"')
    with Load(fleet.url, clients=6, max_seconds=60) as load:
        time.sleep(0.3)
        result = fleet.run("apply")
        time.sleep(0.2)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "analysis failed" in result.stdout + result.stderr
    web = fleet.status()["services"][0]
    assert web["release"] == "r1" and {i["release"] for i in web["instances"]} == {"r1"}
    with agent(fleet) as client:
        figures = client.get("/v1/rollouts/web").json()["releases"]
    served_by_bad = figures["r2"]["requests"]
    total = served_by_bad + figures["r1"]["requests"]
    # bounded by the first weight step: about 10 % of the traffic during the window
    assert 0 < served_by_bad <= 0.2 * total, figures
    assert load.failed == figures["r2"]["errors"] <= served_by_bad  # only the bad release's 500s
    kinds = [e["kind"] for e in events(fleet)]
    assert "rollout.analysis_fail" in kinds and "rollout.rolled_back" in kinds


@pytest.mark.slow  # over ~5 s: in `make test`, not the fast subset
def test_blue_green_preview_promote_and_instant_rollback(fleet: Fleet) -> None:
    preview = fleet.port + 1 if fleet.port < 65000 else fleet.port - 1
    use_strategy(
        fleet,
        f"""      type: blue_green
      preview_port: {preview}
      scale_down_delay: 60s""",
    )
    fleet.ok("apply")
    fleet.set_version("v2")
    waiting = fleet.run("apply")
    assert waiting.returncode == 0 and "rollout promote web" in waiting.stdout
    preview_url = f"http://127.0.0.1:{preview}/"
    assert {httpx.get(preview_url, timeout=5).json()["version"] for _ in range(6)} == {"v2"}
    assert {fleet.get()["version"] for _ in range(6)} == {"v1"}
    fleet.ok("rollout", "promote", "web")
    deadline = time.monotonic() + 10
    while {fleet.get()["version"] for _ in range(6)} != {"v2"}:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    started = sum(1 for e in events(fleet) if e["kind"] == "instance.started")
    with Load(fleet.url, clients=4, max_seconds=30) as load:
        fleet.run("rollback", "web")
        time.sleep(0.3)
    assert {fleet.get()["version"] for _ in range(6)} == {"v1"}
    assert sum(1 for e in events(fleet) if e["kind"] == "instance.started") == started
    assert load.failed == 0, dict(load.errors)
    web = fleet.status()["services"][0]
    assert web["release"] == "r1" and {i["release"] for i in web["instances"]} == {"r1"}


@pytest.mark.slow  # over ~8 s: in `make test`, not the fast subset
def test_a_roll_out_waiting_for_promotion_survives_an_agent_restart(fleet: Fleet) -> None:
    use_strategy(
        fleet,
        """      type: canary
      steps:
        - set_weight: 34
        - pause: {}""",
    )
    fleet.ok("apply")
    fleet.set_version("v2")
    assert fleet.run("apply").returncode == 0  # waits for a person
    restarted = fleet.run("agent", "restart")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    deadline = time.monotonic() + 20
    while True:
        with agent(fleet) as client:
            view = client.get("/v1/rollouts/web").json()
        if view.get("awaiting_promotion"):
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.2)
    assert {fleet.get()["version"] for _ in range(30)} == {"v1", "v2"}
    fleet.ok("rollout", "promote", "web")
    deadline = time.monotonic() + 20
    while fleet.status()["services"][0]["release"] != "r2":
        assert time.monotonic() < deadline
        time.sleep(0.2)
