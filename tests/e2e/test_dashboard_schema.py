"""One schema: the CLI's --json output validates against the agent's OpenAPI components; the
release diff and the log tail agree between the CLI, the API and the files on disk.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest

from tests.e2e.conftest import Fleet
from tests.e2e.test_dashboard import ROLLING, with_ui

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # two applies and a canary: ~30 s loaded

CANARY = """      type: canary
      steps:
        - set_weight: 50
        - analysis: {window: 500ms, min_requests: 0, max_p99_ms: 900}
      bake_window: 500ms
      analysis: {min_requests: 0}"""


def conforms(document: dict[str, Any], component: str, value: Any) -> None:
    """Validate against `#/components/schemas/<component>` of the served OpenAPI document."""
    schema = {"$ref": f"#/components/schemas/{component}", "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(value)


def test_cli_json_is_the_api_schema_and_history_diff_and_logs_agree(fleet: Fleet) -> None:
    base = with_ui(fleet)
    fleet.edit_spec(ROLLING, CANARY)
    fleet.ok("apply")
    fleet.edit_spec("GREETING: hello", "GREETING: howdy")
    fleet.ok("apply")
    with httpx.Client(base_url=base, timeout=10) as client:
        document = client.get("/openapi.json").json()
        api_diff = client.get("/v1/services/web/releases/r1/diff/r2").json()
        api_history = client.get("/v1/services/web/releases").json()
        conforms(document, "FleetView", client.get("/v1/fleet").json())
        logs = client.get("/v1/logs/web", params={"tail": 5}).json()
        again = client.get("/v1/logs/web", params={"cursor": logs["cursor"]}).json()

    status = json.loads(fleet.ok("status", "--json").stdout)
    conforms(document, "StatusView", status)
    assert status["services"][0]["release"] == "r2"
    conforms(document, "EventsView", json.loads(fleet.ok("events", "--json").stdout))
    rollout = json.loads(fleet.ok("rollout", "status", "web", "--json").stdout)
    conforms(document, "RolloutView", rollout)
    # the finished canary still shows its verdicts: the step's analysis, then the bake window
    assert [a["phase"] for a in rollout["analyses"]] == ["analysis", "bake window"]
    assert {a["result"] for a in rollout["analyses"]} == {"pass"}
    assert rollout["analyses"][0]["thresholds"]["max_p99_ms"] == 900
    assert rollout["bake"]["result"] == "pass"
    told = fleet.ok("rollout", "status", "web").stdout
    assert "analysis of r2: pass" in told and "bake window of r2: pass" in told

    # one schema and one function behind `corral history web --json` and the API
    history = json.loads(fleet.ok("history", "web", "--json").stdout)
    conforms(document, "HistoryView", history)
    assert history == api_history
    assert [(r["release"], r["current"]) for r in history["releases"]] == [
        ("r1", False),
        ("r2", True),
    ]

    # one function behind both: `corral history web --diff r1 r2` and the API
    cli_diff = json.loads(fleet.ok("history", "web", "--diff", "r1", "r2", "--json").stdout)
    conforms(document, "ReleaseDiff", cli_diff)
    assert cli_diff == api_diff
    assert [(c["key"], c["before"], c["after"]) for c in cli_diff["config"]] == [
        ("env.GREETING", "hello", "howdy")
    ]
    assert cli_diff["image"]["changed"] is False
    text = fleet.ok("history", "web", "--diff", "r1", "r2").stdout
    assert "env.GREETING: hello → howdy" in text

    # the log tail: each live instance said it listens; nothing new was written since
    conforms(document, "LogTail", logs)
    live = {i["id"] for i in status["services"][0]["instances"]}
    said = {line["instance"] for line in logs["lines"] if "listening on port" in line["line"]}
    assert live <= said
    assert again["lines"] == []
