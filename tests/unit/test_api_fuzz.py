"""Fuzz the agent's API from its own OpenAPI document (schemathesis): no request makes a 500.

The app is the one the unix socket serves (no Guard: the trusted path reaches every action),
over a real Agent with the in-memory driver, router and state store. Few examples per
operation keep it to seconds.
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from tests.unit.test_api_dashboard import make_agent, make_app


async def _restart() -> int:  # stands in for the hand-over to a new agent process
    return 0


# never created: the in-memory parts write nothing, and an absent image store reads as empty
_home = Path("/nonexistent/corral-fuzz-home")
_app = make_app(make_agent(_home), on_stop=lambda: None, on_restart=_restart)
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_makes_a_server_error(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
