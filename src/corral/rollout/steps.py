"""The steps a strategy yields and the fleet view it decides from.

A strategy is a generator: it looks at a `Fleet` snapshot, yields one `Step`, and receives the
next snapshot after the executor performed it (pyinfra/httpx style). It never sleeps, spawns or
opens sockets, so it is tested step by step with plain data.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Member:
    """One live instance of the service, as the executor sees it now."""

    id: str
    serial: int
    release: int
    ready: bool  # passed its health check and is (or may be) routed
    alive: bool = True  # the driver still sees it running


@dataclass(frozen=True)
class Verdict:
    """The outcome of an analysis window."""

    result: str  # "pass" | "fail" | "inconclusive"
    detail: str
    figures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Fleet:
    members: tuple[Member, ...]
    verdict: Verdict | None = None  # the answer to the step just performed, if an Analyse

    def of(self, release: int) -> list[Member]:
        return [m for m in self.members if m.release == release]

    def not_of(self, release: int) -> list[Member]:
        return [m for m in self.members if m.release != release]


@dataclass(frozen=True)
class Start:
    """Start one new instance of `release` per serial (recorded before started: law 7)."""

    release: int
    serials: tuple[int, ...]


@dataclass(frozen=True)
class AwaitReady:
    """Wait until these instances pass their health check, or fail them after `timeout`."""

    instance_ids: tuple[str, ...]


@dataclass(frozen=True)
class Retire:
    """Take these out of routing, drain their in-flight requests, then stop them (law 6)."""

    instance_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class SetWeight:
    """Send `percent` of the route's traffic to `release`, the rest to the others."""

    release: int
    percent: int


@dataclass(frozen=True)
class Pause:
    """Wait `duration` seconds, or (None) until someone promotes; abort ends it."""

    duration: float | None
    reason: str
    awaiting_promotion: bool = False


@dataclass(frozen=True)
class Analyse:
    """Judge `release` by the router's figures over the analysis window."""

    release: int
    analysis: dict[str, Any]
    phase: str = "analysis"  # or "bake window"


@dataclass(frozen=True)
class Preview:
    """Open the preview route: only `release` behind it (blue-green)."""

    release: int
    port: int


@dataclass(frozen=True)
class Reached:
    """The strategy begins step `index` of the spec's `total` steps (`total`: full promotion).

    Recorded, so a roll-out resumed by the next agent continues here, not from step 0."""

    release: int
    index: int
    total: int


@dataclass(frozen=True)
class Failed:
    """The roll-out cannot succeed; the executor rolls back. Returned, not yielded."""

    reason: str
    instance_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completed:
    pass


Step = Start | AwaitReady | Retire | SetWeight | Pause | Analyse | Preview | Reached
Outcome = Completed | Failed
Strategy = Generator[Step, Fleet, Outcome]
