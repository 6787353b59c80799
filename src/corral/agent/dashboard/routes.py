"""The dashboard page and the read/act endpoints it needs beyond the trunk's API.

Everything the page shows comes from documented JSON endpoints (in /openapi.json), so a
script sees exactly what the page sees. Actions reached over TCP pass the Guard first, which
names the token in `request.state.actor`; over the unix socket the body's `who` is used.
"""

from __future__ import annotations

import os
import time
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from corral.agent.controller import Agent
from corral.api_schema import FleetView, HistoryView, ReleaseDiff
from corral.errors import UsageError
from corral.release_diff import diff_of
from corral.release_history import history_of

PAGE = Path(__file__).with_name("index.html")
FLEET_MAX_AGE = 0.25  # s: every open page polls each second; one state read serves them all


class RollbackRequest(BaseModel):
    to: str | None = Field(
        default=None, description="release to run again (rN); default: the one before"
    )
    who: str = Field(default="?", description="recorded in the event (over TCP: the token's name)")


class RollbackAccepted(BaseModel):
    apply_id: str
    attached: bool


def actor_of(request: Request, fallback: str) -> str:
    """The token's name when the Guard authorised the request, else what the caller says."""
    return str(getattr(request.state, "actor", None) or fallback)


@cache
def _page() -> str:
    return PAGE.read_text()


def install(app: FastAPI, agent: Agent) -> None:
    """Add the dashboard page and its endpoints to the agent's app."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    @router.get("/ui", include_in_schema=False)
    async def page() -> HTMLResponse:
        # no caching: a restarted agent may serve a newer page
        return HTMLResponse(_page(), headers={"Cache-Control": "no-store"})

    recent: dict[str, Any] = {"at": -1.0, "body": b""}

    @router.get("/v1/fleet", response_model=FleetView)
    async def fleet() -> Response:
        """`/v1/status` plus what the overview shows: driver, and each instance's age.

        At most FLEET_MAX_AGE s old: concurrent viewers share one read (and one encoding)."""
        if time.monotonic() - recent["at"] > FLEET_MAX_AGE:
            recent["body"] = FleetView.model_validate(fleet_view()).model_dump_json().encode()
            recent["at"] = time.monotonic()
        return Response(recent["body"], media_type="application/json")

    def fleet_view() -> dict[str, Any]:
        now = time.time()
        view = agent.status()
        created = {r.id: r.created_at for r in agent.store.list_instances()}
        for service in view["services"]:
            service["driver"] = agent.driver.name
            for instance in service["instances"]:
                born = created.get(instance["id"]) or 0.0
                instance["age_seconds"] = round(now - born, 1) if born else None
        return {
            "project": agent.project,
            "environment": agent.environment,
            "agent_id": agent.agent_id,
            "ts": now,
            **view,
        }

    @router.get("/v1/services/{service}/releases")
    async def releases(service: str) -> HistoryView:
        """Every release of the service, oldest first, and which one runs now (the shape of
        `corral history SERVICE --json`)."""
        try:
            return history_of(agent.store, service)
        except UsageError as exc:
            raise HTTPException(404, exc.message) from exc

    @router.get("/v1/services/{service}/releases/{a}/diff/{b}")
    async def release_diff(service: str, a: str, b: str) -> ReleaseDiff:
        """What changed from release `a` to `b` (rN): image digest and config keys; a secret
        shows only its reference and version, never its value."""
        return diff_of(agent.store, service, a, b)

    @router.get("/v1/images")
    async def images() -> dict[str, Any]:
        """The image store's entries: digests, channels, revoked ones."""
        from corral.agent.runtime import image_store
        from corral.images import lifecycle

        store = image_store(agent.home)
        if not os.path.exists(store.root / "index.json"):
            return {"images": []}
        return {"images": [e.to_json() for e in lifecycle.entries(store)]}

    @router.post("/v1/services/{service}/rollback", status_code=202)
    async def rollback(service: str, body: RollbackRequest, request: Request) -> RollbackAccepted:
        """Run an earlier release again (as `corral rollback`); follow it at /v1/applies/{id}."""
        from corral.engine import rollback_target

        who = actor_of(request, body.who)
        target = rollback_target(agent.store, service, body.to)
        holder = {
            "user": who,
            "host": agent.host,
            "pid": agent.pid,
            "command": f"dashboard rollback {service}",
            "message": f"rollback of {service} by {who}",
        }
        apply_id, attached = await agent.submit(target, holder)
        return RollbackAccepted(apply_id=apply_id, attached=attached)

    app.include_router(router)
