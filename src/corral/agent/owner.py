"""Reaching the agent that owns an environment from another CORRAL_HOME or host.

An environment is run by one agent, recorded in the state (`AgentRecord`); its instances'
logs stay on its host, under its home. A CLI elsewhere (a colleague's machine on the team's
PostgreSQL) reads them through that agent's TCP API (`--ui-port`, recorded as `api`), or is
refused with the owner named and what to do.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from corral.agent.client import error_from
from corral.api_schema import LogRecords
from corral.errors import AgentError, UsageError
from corral.logs.query import LogQuery, Page
from corral.state.protocol import StateStore
from corral.state.records import AgentRecord


def foreign_owner(store: StateStore, home: Path) -> AgentRecord | None:
    """The agent recorded as running this environment when it is another home's or another
    host's; None when it is this home's, or none is recorded."""
    agent = store.get_agent()
    if agent is None:
        return None
    if agent.host == socket.gethostname() and Path(agent.home).resolve() == home.resolve():
        return None
    return agent


def describe(agent: AgentRecord) -> str:
    return f"the agent on {agent.host} (pid {agent.pid}, home {agent.home})"


def _unreadable(agent: AgentRecord, why: str) -> UsageError:
    return UsageError(
        f"this environment's logs are on {agent.host}, kept by {describe(agent)}, {why}",
        hint="Start that agent with --ui-port PORT (or CORRAL_UI_PORT) and a --ui-host this "
        "machine reaches, so its API serves them; or run `corral logs` there.",
    )


def token_set() -> bool:
    return bool(os.environ.get("CORRAL_UI_TOKEN", "").strip())


class OwnerLogs:
    """Pages of logs read through the owning agent's API (`GET /v1/services/{s}/logs`)."""

    def __init__(self, agent: AgentRecord, *, timeout: float = 30.0) -> None:
        if not agent.api:
            raise _unreadable(agent, "which serves no API that other machines can reach")
        self.agent = agent
        # an agent listening beyond loopback serves logs only with a token (`corral ui token
        # create NAME` on its host), given to this machine as CORRAL_UI_TOKEN
        token = os.environ.get("CORRAL_UI_TOKEN", "").strip()
        self._http = httpx.Client(
            base_url=agent.api,
            timeout=httpx.Timeout(timeout, connect=5.0),
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )

    def read(self, query: LogQuery, cursor: str | None = None) -> Page:
        params: dict[str, Any] = query.params()
        if cursor is not None:
            params["cursor"] = cursor
        try:
            response = self._http.get(f"/v1/services/{query.service}/logs", params=params)
        except (httpx.HTTPError, OSError) as exc:
            raise _unreadable(
                self.agent, f"whose API at {self.agent.api} did not answer ({exc})"
            ) from exc
        if response.status_code == 401:
            raise UsageError(
                f"{describe(self.agent)} serves this environment's logs only with a token "
                f"({'the one in CORRAL_UI_TOKEN was refused' if token_set() else 'none given'})",
                hint="Create one on that host (`corral ui token create NAME`) and set "
                "CORRAL_UI_TOKEN to it here.",
            )
        if response.status_code >= 400:
            raise error_from(response)
        try:
            page = LogRecords.model_validate_json(response.content)
        except ValidationError as exc:
            raise AgentError(
                f"{describe(self.agent)} answered logs this corral cannot read: {exc}",
                hint="Run the same corral version on both machines.",
            ) from exc
        return Page([r.model_dump() for r in page.records], page.cursor, page.omitted)

    def close(self) -> None:
        self._http.close()
