"""The steps a strategy yields and the fleet view it decides from.

A strategy is a generator: it looks at a `Fleet` snapshot, yields one `Step`, and receives the
next snapshot after the executor performed it (pyinfra/httpx style). It never sleeps, spawns or
opens sockets, so it is tested step by step with plain data.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    """One live instance of the service, as the executor sees it now."""

    id: str
    serial: int
    release: int
    ready: bool  # passed its health check and is (or may be) routed
    alive: bool = True  # the driver still sees it running


@dataclass(frozen=True)
class Fleet:
    members: tuple[Member, ...]

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
class Failed:
    """The roll-out cannot succeed; the executor rolls back. Returned, not yielded."""

    reason: str
    instance_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completed:
    pass


Step = Start | AwaitReady | Retire
Outcome = Completed | Failed
Strategy = Generator[Step, Fleet, Outcome]
