"""`EmbeddedRouter`: corral's own HTTP/1.1 reverse proxy, one listener per service route.

It runs inside the agent's event loop (uvloop when installed, the default loop otherwise).
Each route spreads requests over its routed backends by smooth weighted round-robin, keeps
client and backend connections alive (a bounded idle pool per backend), streams bodies both
ways, and counts requests, errors and latency per release. Backends that refuse, time out on
connect or drop a request before answering are ejected at once, and idempotent requests are
retried on another backend; with no backend at all a request is held briefly (a hand-over in
progress) before a 503 (law 6: no request dropped during a roll-out).

Module map: `route` (routing decisions), `downstream`/`upstream` (client and backend
connections, the hot path), `pool` (one backend's state), `balancer`, `stats`, `wire`.
"""

from __future__ import annotations

import asyncio
import socket

from corral.errors import UsageError
from corral.router.listen import adopt_listener, bind_listener
from corral.router.protocol import Backend, RouteStats
from corral.router.route import EjectCallback, Route
from corral.router.settings import ProxySettings

__all__ = ["EjectCallback", "EmbeddedRouter", "ProxySettings"]


class EmbeddedRouter:
    """Implements `corral.router.protocol.Router` with real sockets.

    `on_eject(service, instance_id, reason)` is called when a backend is ejected, so the agent
    can replace the instance (law 8); the ejected ids are also in `stats(service).ejected`.
    """

    def __init__(
        self,
        settings: ProxySettings | None = None,
        *,
        on_eject: EjectCallback | None = None,
    ) -> None:
        self.settings = settings or ProxySettings()
        self.on_eject = on_eject
        self._routes: dict[str, Route] = {}

    async def open_route(
        self,
        service: str,
        host: str,
        port: int,
        sock: socket.socket | None = None,
        *,
        hold_timeout: float | None = None,
    ) -> None:
        """Listen for `service` on host:port, or on `sock` (already listening) when given.

        Opening an open route again is a no-op, except that a new port or socket moves the
        route there (backends and counters are kept). Port 0 picks a free port (`routes()`).
        """
        if hold_timeout is not None and hold_timeout <= 0:
            raise ValueError(f"hold_timeout must be > 0, got {hold_timeout}")
        route = self._routes.get(service)
        if route is not None:
            if hold_timeout is not None:
                route.hold_timeout = hold_timeout
            if sock is None and host == route.host and port in (0, route.port):
                return
            if sock is not None and sock is route.sock:
                return
        if sock is None:
            listener = bind_listener(service, host, port, self.settings.backlog)
        else:
            listener = adopt_listener(service, sock, port, self.settings.backlog)
        fresh = route is None
        if route is None:
            route = Route(
                service,
                self.settings,
                hold_timeout=hold_timeout or self.settings.hold_timeout,
                on_eject=self.on_eject,
            )
        try:
            await route.serve(listener)
        except BaseException:
            listener.close()
            if fresh:
                await route.close()
            raise
        self._routes[service] = route

    def listening_socket(self, service: str) -> socket.socket:
        """The route's listening socket (to hand its fd to the next agent on restart)."""
        sock = self._route(service).sock
        assert sock is not None
        return sock

    async def close_route(self, service: str) -> None:
        route = self._routes.pop(service, None)
        if route is not None:
            await route.close()

    async def set_backends(self, service: str, backends: list[Backend]) -> None:
        self._route(service).set_backends(backends)

    async def drain(self, service: str, instance_ids: list[str], *, timeout: float) -> int:
        return await self._route(service).drain(instance_ids, timeout)

    def readmit(self, service: str, instance_id: str) -> bool:
        """Route an ejected backend again (say, after it passed a health check)."""
        return self._route(service).readmit(instance_id)

    def stats(self, service: str) -> RouteStats:
        return self._route(service).snapshot()

    def routes(self) -> dict[str, int]:
        return {service: route.port for service, route in self._routes.items()}

    async def retire(self, timeout: float = 5.0) -> None:
        """Hand-over: stop accepting, end each client connection after its next response,
        then close (the successor accepts on the same sockets meanwhile)."""
        routes, self._routes = self._routes, {}
        await asyncio.gather(*(route.retire(timeout) for route in routes.values()))

    async def close(self) -> None:
        routes, self._routes = self._routes, {}
        for route in routes.values():
            await route.close()

    def _route(self, service: str) -> Route:
        route = self._routes.get(service)
        if route is None:
            raise UsageError(
                f"service {service!r} has no route in this router",
                hint="Open it first (`open_route`); a service without `route:` is not routed.",
            )
        return route
