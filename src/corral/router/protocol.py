"""The `Router` interface: the stable front door of a service.

It knows backends by instance id and a release label, nothing more. Traffic only reaches the
backends it was given (law 6): `set_backends` replaces the routed set; a backend that leaves
it stops receiving new requests at once, and `drain` waits for its in-flight requests.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Backend:
    instance_id: str
    release: str  # label such as "r2", for per-release stats
    host: str
    port: int
    weight: int = 1


LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1,
    2,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1000,
    2000,
    5000,
    float("inf"),
)


@dataclass
class ReleaseStats:
    """Counters of one release behind one route (cumulative since the route was opened)."""

    requests: int = 0  # responses delivered or failed, counted when the request ends
    responses_5xx: int = 0  # 5xx answered by the backend
    router_errors: int = 0  # 5xx made by the router itself (no backend could answer)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_MS))
    in_flight: int = 0
    latency_sum_seconds: float = 0.0  # of the responses counted in latency_buckets


@dataclass
class RouteStats:
    service: str
    port: int
    requests: int = 0
    router_errors: int = 0  # requests the router had to fail (502/503/504 it made)
    retries: int = 0  # idempotent requests retried on another backend
    by_release: dict[str, ReleaseStats] = field(default_factory=dict)
    # instance ids taken out of routing because they refused, timed out or reset a connection;
    # they stay out until a routed set without them, or an explicit readmit
    ejected: set[str] = field(default_factory=set)


class Router(Protocol):
    async def open_route(
        self,
        service: str,
        host: str,
        port: int,
        sock: socket.socket | None = None,
        *,
        hold_timeout: float | None = None,
    ) -> None:
        """Listen for the service. Raises PortInUseError if the port is taken. Idempotent.

        `sock`: an already-listening socket to serve instead of binding (a socket handed over
        by the previous agent, so a restart refuses no connection). `hold_timeout`: how long
        a request waits for a backend when none is routed before it is answered 503."""
        ...

    async def close_route(self, service: str) -> None: ...

    async def set_backends(self, service: str, backends: list[Backend]) -> None:
        """The routed set from now on; backends not in it get no new request."""
        ...

    async def drain(self, service: str, instance_ids: list[str], *, timeout: float) -> int:
        """Take these out of routing and wait until their in-flight requests end.

        Returns how many requests were still in flight when `timeout` passed (0 = clean)."""
        ...

    def stats(self, service: str) -> RouteStats: ...

    def routes(self) -> dict[str, int]: ...  # service → port

    def listening_socket(self, service: str) -> socket.socket:
        """The route's listening socket, whose fd the agent hands to its successor."""
        ...

    async def close(self) -> None: ...
