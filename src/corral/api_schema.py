"""The JSON shapes the agent's API serves and the CLI's `--json` prints: one schema for both.

The API declares these as its response models (so they are in /openapi.json under
`components/schemas`); the CLI builds or validates the same models before printing. Only
pydantic here: the CLI imports this without FastAPI.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# -- status (`corral status --json`, GET /v1/status) -----------------------------------------


class InstanceView(BaseModel):
    id: str
    serial: int
    release: str = Field(description="rN")
    state: str = Field(description="pending, running, stopping, stopped or failed")
    health: str = Field(description="ready, starting, dead, … ('unknown' without an agent)")
    address: str | None
    image: str | None = Field(description="image digest of the instance's release")


class RolloutProgress(BaseModel):
    """A roll-out under way; the strategy's own figures may add fields."""

    model_config = ConfigDict(extra="allow")

    apply_id: str | None = None
    strategy: str | None = None
    from_release: int | None = None
    to_release: int | None = None
    started_at: float | None = None
    step: str | None = None
    weights: dict[str, int] = Field(default_factory=dict)
    awaiting_promotion: bool = False
    paused: bool = False


class ServiceView(BaseModel):
    name: str
    release: str | None = Field(description="the current release, rN")
    desired: int
    ready: int
    route: str | None = Field(description="http://127.0.0.1:PORT when routed")
    rollout: RolloutProgress | None
    instances: list[InstanceView]


class StatusView(BaseModel):
    services: list[ServiceView]
    strangers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="docker: containers with corral's labels that corral did not start "
        "(container, name, service, instance, state, image); never touched",
        exclude_if=lambda value: not value,  # absent when there are none
    )
    agent: str | None = Field(
        default=None,
        description="'not running' when read from the state without an agent",
        exclude_if=lambda value: value is None,  # the agent's own answer has no such key
    )


# -- fleet (GET /v1/fleet: the dashboard's overview) --------------------------------------------


class FleetInstanceView(InstanceView):
    age_seconds: float | None = Field(description="since the instance was recorded")


class FleetServiceView(ServiceView):
    driver: str = Field(description="the driver that runs the service: local, docker, …")
    instances: list[FleetInstanceView]  # type: ignore[assignment]  # narrowed: with their age


class FleetView(StatusView):
    """`/v1/status` plus what the overview shows: the agent, the driver, instances' ages."""

    project: str
    environment: str
    agent_id: str
    ts: float = Field(description="when the view was taken (Unix time)")
    services: list[FleetServiceView]  # type: ignore[assignment]  # narrowed: with the driver


# -- events (`corral events --json`, GET /v1/events) -----------------------------------------


class EventView(BaseModel):
    seq: int
    ts: float
    kind: str
    service: str | None
    message: str
    actor: str | None = Field(description="who acted: a user, an agent, or token:NAME")
    data: dict[str, Any]


class EventsView(BaseModel):
    events: list[EventView]


# -- roll-outs (`corral rollout status --json`, GET /v1/rollouts/{service}) ------------------


class ReleaseFigures(BaseModel):
    """One release behind the route: instances, and the router's counters since it started."""

    instances: int = 0
    ready: int = 0
    requests: int | None = None
    errors: int | None = None
    error_rate: float | None = None
    p99_ms: float | None = None


class AnalysisThresholds(BaseModel):
    min_requests: int | None = None
    max_error_rate: float | None = None
    max_p99_ms: float | None = None
    compare_to_stable: bool | None = None
    inconclusive: str | None = Field(default=None, description="pause or proceed")


class AnalysisVerdict(BaseModel):
    """One analysis window of the roll-out: running, or its verdict with the deciding figures."""

    phase: str = Field(description="'analysis' (a canary step) or 'bake window'")
    release: str = Field(description="the release judged, rN")
    window: float = Field(description="seconds")
    started_at: float
    ends_at: float
    result: Literal["running", "pass", "fail", "inconclusive"]
    detail: str | None = Field(description="why, as the verdict's event says it")
    figures: dict[str, float] = Field(
        description="requests, errors, error_rate, p99_ms (stable_error_rate when compared)"
    )
    thresholds: AnalysisThresholds | None = Field(description="from the roll-out's strategy")


class BakeWindow(BaseModel):
    """The analysis that goes on after full promotion; it can still roll back."""

    release: str
    window: float
    started_at: float
    ends_at: float
    remaining_seconds: float
    result: Literal["running", "pass", "fail", "inconclusive"]


class RolloutView(BaseModel):
    service: str
    running: bool
    apply_id: str | None = None
    strategy: str | None = None
    step: str | None = None
    step_number: int | None = Field(
        default=None, description="canary: the spec step reached, from 1; steps + 1 = promotion"
    )
    steps: int | None = Field(default=None, description="canary: how many steps the spec has")
    weights: dict[str, int] = Field(default_factory=dict)
    awaiting_promotion: bool = False
    paused: bool = False
    releases: dict[str, ReleaseFigures]
    analyses: list[AnalysisVerdict] = Field(
        default_factory=list, description="this roll-out's analysis windows, oldest first"
    )
    bake: BakeWindow | None = None


# -- release history ----------------------------------------------------------------------------


class ReleaseView(BaseModel):
    release: str = Field(description="rN")
    number: int
    image_digest: str
    config_hash: str
    created_at: float = Field(description="Unix time")
    created_by: str = Field(description="who applied it")
    current: bool = Field(description="whether it is the release the service runs now")
    ended: str | None = Field(
        default=None,
        description="how its last roll-out ended: `succeeded`, or `rolled back: REASON` "
        "(None while one runs, or when none was recorded)",
    )
    ended_at: float | None = Field(default=None, description="Unix time it ended")


class HistoryView(BaseModel):
    """`corral history SERVICE --json`, GET /v1/services/{service}/releases."""

    service: str
    current: str | None = Field(description="the release that runs now, rN")
    releases: list[ReleaseView] = Field(description="oldest first")


class ConfigChange(BaseModel):
    key: str = Field(description="flattened: env.GREETING, health.interval, secrets.db, …")
    change: Literal["added", "removed", "changed"]
    before: str | None = Field(description="JSON spelling; a secret shows only ref and version")
    after: str | None


class ImageChange(BaseModel):
    before: str
    after: str
    changed: bool


class ReleaseDiff(BaseModel):
    """What differs between two releases of a service (law 5: never a secret's value)."""

    service: str
    from_release: str
    to_release: str
    image: ImageChange
    config_hash_changed: bool
    config: list[ConfigChange]


# -- logs ---------------------------------------------------------------------------------------


class LogLine(BaseModel):
    instance: str
    release: str
    line: str
    time: str | None = Field(default=None, description="RFC 3339 UTC; none for old unstamped logs")
    stream: str | None = Field(default=None, description="stdout or stderr")
    fields: dict[str, Any] | None = Field(
        default=None, description="the object, when the app wrote the line as one JSON object"
    )


class LogTail(BaseModel):
    service: str
    lines: list[LogLine]
    cursor: str = Field(
        description="pass back as `cursor` to get only the lines written since (polling)"
    )


class LogRecord(BaseModel):
    """One line as `corral logs --json` prints it (one object per line)."""

    service: str
    instance: str
    release: str
    time: str | None = Field(description="RFC 3339 UTC; none for old unstamped logs")
    stream: str | None = Field(description="stdout or stderr; none for old unstamped logs")
    line: str
    fields: dict[str, Any] | None = Field(
        description="the object, when the app wrote the line as one JSON object"
    )


class LogRecords(BaseModel):
    """A page of `GET /v1/services/{service}/logs`: what `corral logs` reads from elsewhere."""

    service: str
    records: list[LogRecord]
    cursor: str = Field(
        description="pass back as `cursor` to get only the records written since (follow)"
    )
    omitted: int = Field(default=0, description="older matching records left out of this page")
