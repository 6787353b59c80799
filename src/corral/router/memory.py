"""`InMemoryRouter`: the `Router` interface with no socket, for fast logic tests.

It keeps routed sets, weights, drains and counters exactly as `EmbeddedRouter` does (the
same balancer and the same rules), and lets a test play the traffic: `pick(service)` is one
request (where it went, counted in the stats), `set_in_flight` makes a drain wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from corral.errors import PortInUseError, UsageError
from corral.router.balancer import SmoothWeighted, check_backends
from corral.router.protocol import Backend, RouteStats
from corral.router.stats import RouteCounters

EjectCallback = Callable[[str, str, str], None]  # (service, instance_id, reason)

_FIRST_FAKE_PORT = 40_000


@dataclass
class _Route:
    host: str
    port: int
    hold_timeout: float
    backends: dict[str, Backend] = field(default_factory=dict)
    ejected: set[str] = field(default_factory=set)
    in_flight: dict[str, int] = field(default_factory=dict)  # instance id → requests
    labels: dict[str, str] = field(default_factory=dict)  # instance id → release, ever routed
    counters: RouteCounters = field(default_factory=RouteCounters)
    balancer: SmoothWeighted[Backend] = field(default_factory=lambda: SmoothWeighted([]))
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    sock: socket.socket | None = None  # the socket it was opened with (never listened on)

    def rebalance(self) -> None:
        self.balancer = SmoothWeighted(
            [(b, b.weight) for key, b in self.backends.items() if key not in self.ejected]
        )


class InMemoryRouter:
    def __init__(
        self,
        *,
        taken_ports: Iterable[int] = (),
        on_eject: EjectCallback | None = None,
        hold_timeout: float = 3.0,
    ) -> None:
        self.taken_ports = set(taken_ports)  # ports "another process" listens on
        self.on_eject = on_eject
        self.hold_timeout = hold_timeout
        # every call that changed routing, in order: ("set_backends", service, [Backend]),
        # ("drain", service, [instance ids]), ("eject", service, instance id), ...
        self.history: list[tuple[str, str, Any]] = []
        self._routes: dict[str, _Route] = {}
        self._next_port = _FIRST_FAKE_PORT

    # -- Router -----------------------------------------------------------------------------

    async def open_route(
        self,
        service: str,
        host: str,
        port: int,
        sock: socket.socket | None = None,
        *,
        hold_timeout: float | None = None,
    ) -> None:
        if sock is not None:
            port = sock.getsockname()[1]
        route = self._routes.get(service)
        if route is not None and (port in (0, route.port)) and host == route.host:
            if hold_timeout is not None:
                route.hold_timeout = hold_timeout
            return
        if port == 0:
            port = self._next_port
            self._next_port += 1
        owner = next(
            (name for name, r in self._routes.items() if (r.host, r.port) == (host, port)), None
        )
        if port in self.taken_ports or (owner is not None and owner != service):
            raise PortInUseError(
                f"port {port} on {host} is already in use: the route of service "
                f"{service!r} cannot listen there",
                hint="Stop the process that listens on it or give the service another "
                "route port in corral.yaml.",
            )
        if route is None:
            route = self._routes[service] = _Route(host, port, hold_timeout or self.hold_timeout)
        else:
            route.host, route.port = host, port
        route.sock = sock
        self.history.append(("open_route", service, port))

    async def close_route(self, service: str) -> None:
        route = self._routes.pop(service, None)
        if route is not None:
            self._wake(route)
            self.history.append(("close_route", service, route.port))

    async def set_backends(self, service: str, backends: list[Backend]) -> None:
        route = self._route(service)
        check_backends(backends)
        previous = route.backends
        route.backends = {b.instance_id: b for b in backends}
        route.labels.update((b.instance_id, b.release) for b in backends)
        # an ejection sticks while the same backend stays listed (as EmbeddedRouter)
        route.ejected = {
            key
            for key in route.ejected
            if key in route.backends and _same(previous[key], route.backends[key])
        }
        route.rebalance()
        self.history.append(("set_backends", service, list(backends)))

    async def drain(self, service: str, instance_ids: list[str], *, timeout: float) -> int:
        route = self._route(service)
        self.history.append(("drain", service, list(instance_ids)))
        wanted = set(instance_ids)
        if wanted & route.backends.keys():
            await self.set_backends(
                service, [b for key, b in route.backends.items() if key not in wanted]
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while (remaining := sum(route.in_flight.get(key, 0) for key in wanted)) > 0:
            left = deadline - loop.time()
            if left <= 0:
                return remaining
            waiter: asyncio.Future[None] = loop.create_future()
            route.waiters.append(waiter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, left)
        return 0

    def stats(self, service: str) -> RouteStats:
        route = self._route(service)
        return route.counters.snapshot(service, route.port, set(route.ejected))

    def routes(self) -> dict[str, int]:
        return {service: route.port for service, route in self._routes.items()}

    def listening_socket(self, service: str) -> socket.socket:
        """The socket the route was opened with; an in-memory route listens on nothing else."""
        sock = self._route(service).sock
        if sock is None:
            raise UsageError(
                f"the in-memory route of service {service!r} has no listening socket",
                hint="Open it with `sock=` to test a hand-over, or use EmbeddedRouter.",
            )
        return sock

    async def close(self) -> None:
        for service in list(self._routes):
            await self.close_route(service)

    # -- what tests drive -------------------------------------------------------------------

    def hold_of(self, service: str) -> float:
        """How long the route holds a request while no backend is routed."""
        return self._route(service).hold_timeout

    def routed(self, service: str) -> list[Backend]:
        """The backends that may receive new requests (routed, not ejected)."""
        route = self._route(service)
        return [b for key, b in route.backends.items() if key not in route.ejected]

    def pick(self, service: str, *, status: int = 200, seconds: float = 0.001) -> Backend | None:
        """Play one request: the backend it goes to (counted with `status` and `seconds`),
        or None when no backend is routed (counted as the router's 503 after holding)."""
        route = self._route(service)
        backend = route.balancer.pick()
        route.counters.requests += 1
        if backend is None:
            route.counters.router_errors += 1
        else:
            route.counters.release(backend.release).observe(status, seconds)
        return backend

    def set_in_flight(self, service: str, instance_id: str, count: int) -> None:
        """Pretend `count` requests are in flight on an instance (a drain waits for 0)."""
        route = self._route(service)
        before = route.in_flight.get(instance_id, 0)
        route.in_flight[instance_id] = count
        label = route.labels.get(instance_id)
        if label is not None:
            route.counters.release(label).in_flight += count - before
        if count == 0:
            self._wake(route)

    def eject(self, service: str, instance_id: str, reason: str = "connection refused") -> None:
        """Play a backend failure: out of routing at once, as EmbeddedRouter does."""
        route = self._route(service)
        if instance_id not in route.backends or instance_id in route.ejected:
            return
        route.ejected.add(instance_id)
        route.rebalance()
        self.history.append(("eject", service, instance_id))
        if self.on_eject is not None:
            self.on_eject(service, instance_id, reason)

    def readmit(self, service: str, instance_id: str) -> bool:
        route = self._route(service)
        if instance_id not in route.ejected:
            return False
        route.ejected.discard(instance_id)
        route.rebalance()
        return True

    def _route(self, service: str) -> _Route:
        route = self._routes.get(service)
        if route is None:
            raise UsageError(
                f"service {service!r} has no route in this router",
                hint="Open it first (`open_route`); a service without `route:` is not routed.",
            )
        return route

    @staticmethod
    def _wake(route: _Route) -> None:
        waiters, route.waiters = route.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def _same(a: Backend, b: Backend) -> bool:
    return (a.host, a.port, a.release) == (b.host, b.port, b.release)
