"""The agent's HTTP/JSON API (OpenAPI at /openapi.json), served on a unix socket.

The CLI is its first client; the dashboard and users' scripts use the same endpoints. Errors
are JSON `{"error", "message", "hint", "exit_code", "holder"}` so the CLI can keep exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from corral import __version__
from corral.agent.controller import Agent
from corral.agent.logtail import MAX_TAIL, service_logs
from corral.agent.verdicts import VerdictBook
from corral.api_schema import (
    EventsView,
    EventView,
    LogRecord,
    LogRecords,
    LogTail,
    RolloutView,
    StatusView,
)
from corral.errors import CorralError, LockedError
from corral.logs.query import LogQuery, sources
from corral.logs.query import read as read_logs


class Holder(BaseModel):
    user: str = "?"
    host: str = "?"
    pid: int = 0
    command: str = ""
    message: str = ""


class ApplyRequest(BaseModel):
    target: dict[str, Any] = Field(description="services to converge and services to destroy")
    holder: Holder


class SteerRequest(BaseModel):
    who: str = Field(default="?", description="recorded in the event")


class ApplyAccepted(BaseModel):
    apply_id: str
    attached: bool


_STATUS_FOR_EXIT = {1: 500, 2: 422, 3: 409, 4: 409}


def create_app(agent: Agent, *, on_stop: Any = None, on_restart: Any = None) -> FastAPI:
    app = FastAPI(title="corral agent", version=__version__)

    @app.exception_handler(CorralError)
    async def corral_error(_: Request, exc: CorralError) -> JSONResponse:
        body: dict[str, Any] = {
            "error": type(exc).__name__,
            "message": exc.message,
            "hint": exc.hint,
            "exit_code": exc.exit_code,
        }
        if isinstance(exc, LockedError):
            body["holder"] = exc.holder
        return JSONResponse(body, status_code=_STATUS_FOR_EXIT.get(exc.exit_code, 500))

    @app.get("/v1/agent")
    async def agent_info() -> dict[str, Any]:
        return {
            "agent_id": agent.agent_id,
            "pid": agent.pid,
            "host": agent.host,
            "project": agent.project,
            "environment": agent.environment,
            "started_at": agent.started_at,
            "version": __version__,
            "routes": agent.router.routes(),
            "applying": agent.active.id if agent.active else None,
        }

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus text exposition (the same as on --metrics-port)."""
        from corral.agent.metrics import CONTENT_TYPE

        return Response(agent.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/status")
    async def status() -> StatusView:
        return StatusView.model_validate(agent.status())

    @app.post("/v1/applies", status_code=202)
    async def submit(request: ApplyRequest) -> ApplyAccepted:
        apply_id, attached = await agent.submit(request.target, request.holder.model_dump())
        return ApplyAccepted(apply_id=apply_id, attached=attached)

    @app.get("/v1/applies/{apply_id}")
    async def follow(apply_id: str, after: int = 0, wait: float = 0.0) -> dict[str, Any]:
        """The apply and its events after `after`; waits up to `wait` s for something new."""
        deadline = time.monotonic() + min(wait, 30.0)
        while True:
            view = agent.apply_view(apply_id)
            if view is None:
                raise HTTPException(404, f"no apply {apply_id}")
            events = [
                _event_view(e)
                for e in agent.store.list_events(after_seq=after, limit=500)
                if e.data.get("apply_id") == apply_id
            ]
            remaining = deadline - time.monotonic()
            if events or view["status"] != "running" or remaining <= 0:
                last = agent.store.list_events(after_seq=after, limit=500)
                cursor = last[-1].seq if last else after
                return {"apply": view, "events": events, "cursor": cursor}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(agent.new_event.wait(), timeout=remaining)

    @app.get("/v1/events")
    async def events(after: int = 0, service: str | None = None, limit: int = 200) -> EventsView:
        found = agent.store.list_events(service=service, after_seq=after, limit=limit)
        return EventsView(events=[EventView.model_validate(e, from_attributes=True) for e in found])

    @app.get("/v1/logs/{service}")
    async def logs(
        service: str,
        instance: str | None = None,
        tail: Annotated[int, Query(ge=0, le=MAX_TAIL)] = 100,
        cursor: Annotated[str | None, Query(max_length=100_000)] = None,
        since: Annotated[str | None, Query(max_length=64)] = None,
    ) -> LogTail:
        """The last `tail` lines of each instance (live ones and the latest replaced ones),
        or, given the previous answer's `cursor`, only the lines written since (poll it).
        `since` (10m, or 2026-11-24T10:00:00Z) keeps only lines written at or after it."""
        return service_logs(
            agent.store,
            agent.driver,
            service,
            instance=instance,
            lines=tail,
            cursor=cursor,
            from_time=since,
        )

    @app.get("/v1/services/{service}/logs")
    async def log_records(
        service: str,
        instance: str | None = None,
        release: str | None = None,
        grep: Annotated[str | None, Query(max_length=1000)] = None,
        since: Annotated[str | None, Query(max_length=64)] = None,
        until: Annotated[str | None, Query(max_length=64)] = None,
        tail: Annotated[int | None, Query(ge=0)] = None,
        field: Annotated[list[str] | None, Query()] = None,
        cursor: Annotated[str | None, Query(max_length=100_000)] = None,
    ) -> LogRecords:
        """The records `corral logs SERVICE --json` prints, with its filters (`field` is
        KEY=VALUE, repeatable), from this host's files; given the previous page's `cursor`,
        only those written since (how `corral logs -f` follows from another home or host)."""
        query = LogQuery.parse(
            service, instance=instance, release=release, grep=grep, since=since, until=until,
            tail=tail, fields=field or [],
        )  # fmt: skip
        found = sources(agent.store, agent.driver, service, instance=instance, release=release)
        page = await asyncio.to_thread(read_logs, found, query, cursor)  # files only: no state
        return LogRecords(
            service=service,
            records=[LogRecord.model_validate(r) for r in page.records],
            cursor=page.cursor,
            omitted=page.omitted,
        )

    verdicts = VerdictBook(agent.store)

    @app.get("/v1/rollouts/{service}")
    async def rollout(service: str) -> RolloutView:
        """Step, weights, per-release figures, the analysis verdicts and the bake window."""
        view = RolloutView.model_validate(agent.rollout_view(service))
        view.analyses, view.bake = verdicts.view(service, view.apply_id)
        return view

    @app.post("/v1/rollouts/{service}/{action}")
    async def steer(
        service: str, action: str, request: SteerRequest, http: Request
    ) -> dict[str, Any]:
        """promote, pause, resume or abort a running roll-out."""
        if action not in ("promote", "pause", "resume", "abort"):
            raise HTTPException(404, f"no roll-out action {action!r}")
        # over TCP the dashboard's Guard names the token; its name is who acted
        return agent.steer(service, action, getattr(http.state, "actor", None) or request.who)

    @app.post("/v1/agent/stop", status_code=202)
    async def stop() -> dict[str, str]:
        if on_stop is not None:
            asyncio.get_running_loop().call_soon(on_stop)
        return {"status": "stopping"}

    @app.post("/v1/agent/restart")
    async def restart() -> dict[str, Any]:
        """Hand the route sockets to a new agent (no connection refused), then exit."""
        if on_restart is None:
            raise HTTPException(501, "restart is not available in this agent")
        old_pid = agent.pid
        new_pid = await on_restart()
        return {"old_pid": old_pid, "new_pid": new_pid}

    return app


def _event_view(event: Any) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "ts": event.ts,
        "kind": event.kind,
        "service": event.service,
        "message": event.message,
        "actor": event.actor,
        "data": event.data,
    }
