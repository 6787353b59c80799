"""The API's roll-out verdicts, release diff and log tail, over a real Agent (in-memory parts).

Analysis windows are recorded as the executor records them (`rollout.analysis_started`, then
`rollout.analysis_<verdict>` with the figures); the thresholds come from the apply's target.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.agent.controller import ActiveApply, Agent
from corral.agent.logtail import service_logs, since, tail
from corral.drivers.memory import InMemoryDriver
from corral.release_diff import diff_of
from corral.rollout.control import RolloutControl
from corral.state.records import ApplyRecord, ApplyStatus
from tests.unit.test_api_dashboard import make_agent, make_app

STRATEGY: dict[str, Any] = {
    "type": "canary",
    "steps": [
        {"set_weight": 20, "pause": None, "analysis": None},
        {"set_weight": None, "pause": None, "analysis": {"window": 5.0, "max_error_rate": 0.05,
         "max_p99_ms": 250.0, "min_requests": 30, "inconclusive": "pause",
         "compare_to_stable": False}},
    ],
    "bake_window": 60.0,
    "analysis": {"window": 10.0, "max_error_rate": 0.01, "max_p99_ms": None, "min_requests": 20,
                 "inconclusive": "proceed", "compare_to_stable": True},
}  # fmt: skip


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    return make_agent(tmp_path)


@pytest.fixture
async def client(agent: Agent) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(agent))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as the_client:
        yield the_client


def start_canary(agent: Agent, apply_id: str, strategy: dict[str, Any] = STRATEGY) -> None:
    target = {"services": {"web": {"settings": {"strategy": strategy}}}, "destroy": []}
    agent.store.create_apply(
        ApplyRecord(apply_id, ApplyStatus.RUNNING, target, {"user": "alice"}, time.time())
    )
    agent.controls["web"] = RolloutControl(service="web", strategy="canary", step="analysis")


def analysis(agent: Agent, apply_id: str, phase: str, window: float, verdict: str | None) -> None:
    data = {"apply_id": apply_id, "release": 2, "phase": phase}
    agent.emit("rollout.analysis_started", f"web: {phase} of r2", service="web",
               data={**data, "window": window})  # fmt: skip
    if verdict is not None:
        figures = {"requests": 40.0, "errors": 8.0, "error_rate": 0.2, "p99_ms": 25.0}
        agent.emit(f"rollout.analysis_{verdict}",
                   f"web: {phase} of r2: {verdict} (error rate 20.0% over 40 requests > 5.0%)",
                   service="web", data={**data, **figures})  # fmt: skip


async def test_rollout_shows_each_verdict_with_figures_thresholds_and_the_bake_countdown(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    start_canary(agent, "a-old")
    analysis(agent, "a-old", "analysis", 5.0, "pass")  # another roll-out's window: not shown
    start_canary(agent, "a-1")
    agent.active = ActiveApply(id="a-1", target={}, holder={})
    analysis(agent, "a-1", "analysis", 5.0, "fail")
    analysis(agent, "a-1", "bake window", 60.0, None)

    view = (await client.get("/v1/rollouts/web")).json()
    assert view["running"] is True and view["apply_id"] == "a-1"
    first, bake = view["analyses"]
    assert first["result"] == "fail" and first["release"] == "r2"
    assert first["detail"] == "error rate 20.0% over 40 requests > 5.0%"
    assert first["figures"] == {"requests": 40.0, "errors": 8.0, "error_rate": 0.2, "p99_ms": 25.0}
    assert first["thresholds"]["max_error_rate"] == 0.05
    assert first["thresholds"]["max_p99_ms"] == 250.0
    assert first["thresholds"]["min_requests"] == 30
    assert bake["result"] == "running" and bake["thresholds"]["compare_to_stable"] is True
    assert view["bake"]["result"] == "running" and view["bake"]["window"] == 60.0
    assert 0 < view["bake"]["remaining_seconds"] <= 60.0

    agent.emit("rollout.analysis_pass", "web: bake window of r2: pass (error rate 0.0% over 90 "
               "requests)", service="web", data={"apply_id": "a-1", "requests": 90})  # fmt: skip
    agent.controls.pop("web")
    done = (await client.get("/v1/rollouts/web")).json()  # finished: the last roll-out's windows
    assert [a["result"] for a in done["analyses"]] == ["fail", "pass"]
    assert done["bake"]["result"] == "pass" and done["bake"]["remaining_seconds"] == 0.0


async def test_a_window_takes_the_thresholds_of_the_step_it_belongs_to(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    # resumed by a new agent at step 2: its first window is the spec's second analysis
    second = {**STRATEGY["steps"][1]["analysis"], "min_requests": 77}
    steps = [*STRATEGY["steps"], {"set_weight": None, "pause": None, "analysis": second}]
    start_canary(agent, "a-2", {**STRATEGY, "steps": steps})
    agent.active = ActiveApply(id="a-2", target={}, holder={})
    agent.emit("rollout.step", "web: r2 at step 3/3", service="web",
               data={"release": 2, "step": 2, "steps": 3})  # fmt: skip
    analysis(agent, "a-2", "analysis", 5.0, None)
    (window,) = (await client.get("/v1/rollouts/web")).json()["analyses"]
    assert window["result"] == "running" and window["thresholds"]["min_requests"] == 77
    assert window["ends_at"] == window["started_at"] + 5.0


async def test_release_diff_names_image_and_config_changes_but_no_secret_value(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    secret_v1 = {"from": "store", "key": "db", "as": "file", "version": 1,
                 "digest": "hmac-sha256:" + "1" * 64}  # fmt: skip
    config = {"v": 1, "env": {"GREETING": "hi"}, "port": 8080, "secrets": {"db": secret_v1}}
    changed = {
        "v": 1,
        "env": {"GREETING": "hello", "MODE": "fast"},
        "port": 8080,
        "secrets": {"db": {**secret_v1, "version": 2, "digest": "hmac-sha256:" + "2" * 64}},
    }
    agent.store.get_or_create_release("api", "sha256:" + "c" * 64, "sha256:h1", config, "alice")
    agent.store.get_or_create_release("api", "sha256:" + "d" * 64, "sha256:h2", changed, "bob")

    answer = await client.get("/v1/services/api/releases/r1/diff/r2")
    assert answer.status_code == 200, answer.text
    diff = answer.json()
    assert diff["image"] == {"before": "sha256:" + "c" * 64, "after": "sha256:" + "d" * 64,
                             "changed": True}  # fmt: skip
    by_key = {c["key"]: c for c in diff["config"]}
    assert set(by_key) == {"env.GREETING", "env.MODE", "secrets.db"}
    assert (by_key["env.GREETING"]["before"], by_key["env.GREETING"]["after"]) == ("hi", "hello")
    assert by_key["env.MODE"]["change"] == "added"
    assert by_key["secrets.db"]["before"] == "store:db as file v1"
    assert by_key["secrets.db"]["after"] == "store:db as file v2"
    assert "1111" not in answer.text and "2222" not in answer.text

    # the CLI calls the same function
    assert diff_of(agent.store, "api", "r1", "2").model_dump(mode="json") == diff

    missing = await client.get("/v1/services/api/releases/r1/diff/r9")
    assert missing.status_code == 422 and "r1, r2" in missing.json()["hint"]
    assert (await client.get("/v1/services/api/releases/x/diff/r1")).status_code == 422
    assert (await client.get("/v1/services/nope/releases/r1/diff/r2")).status_code == 422


def test_tail_reads_complete_lines_from_the_end_and_then_only_what_is_new(tmp_path: Path) -> None:
    log = tmp_path / "i.log"
    log.write_text("".join(f"line {n}\n" for n in range(1, 2001)) + "partial")
    lines, offset = tail(log, 3)
    assert lines == ["line 1998", "line 1999", "line 2000"]
    assert since(log, offset) == ([], offset)  # the partial line waits for its newline
    with log.open("a") as f:
        f.write(" done\nline 2002\n")
    assert since(log, offset)[0] == ["partial done", "line 2002"]
    log.write_text("rotated\n")  # shorter than the offset: start over
    assert since(log, offset)[0] == ["rotated"]


class LoggingDriver(InMemoryDriver):
    """The in-memory driver, with log files (the local driver writes them the same way)."""

    def __init__(self, root: Path) -> None:
        super().__init__("p", "dev")
        self.root = root

    def log_path(self, instance_id: str) -> Path | None:
        path = self.root / f"{instance_id}.log"
        return path if path.exists() else None


def test_service_logs_tail_then_follow_by_cursor(agent: Agent, tmp_path: Path) -> None:
    driver = LoggingDriver(tmp_path)
    (tmp_path / "web-1.log").write_text("a\nb\nc\n")
    first = service_logs(agent.store, driver, "web", lines=2)
    assert [(x.instance, x.release, x.line) for x in first.lines] == [
        ("web-1", "r2", "b"), ("web-1", "r2", "c")
    ]  # fmt: skip
    with (tmp_path / "web-1.log").open("a") as f:
        f.write("d\n")
    after = service_logs(agent.store, driver, "web", lines=2, cursor=first.cursor)
    assert [x.line for x in after.lines] == ["d"]
    assert service_logs(agent.store, driver, "web", cursor=after.cursor).lines == []


async def test_logs_endpoint_refuses_what_it_cannot_do(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/logs/web?tail=5000")).status_code == 422
    assert (await client.get("/v1/logs/web?cursor=%2F%2F")).status_code == 422
    assert (await client.get("/v1/logs/web?instance=web-9")).status_code == 422
    ok = (await client.get("/v1/logs/web")).json()
    assert ok == {"service": "web", "lines": [], "cursor": ""}
