"""One service's route: its listener, routed backends, balancer, held requests and counters.

Routing decisions happen here (which backend, hold or fail, eject); the connection
protocols in `downstream`/`upstream` only move bytes and report what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable

from corral.router.balancer import SmoothWeighted, check_backends
from corral.router.downstream import ClientConn, Request, now
from corral.router.pool import BackendState
from corral.router.protocol import Backend, RouteStats
from corral.router.settings import ProxySettings
from corral.router.stats import RouteCounters
from corral.router.upstream import BackendConn

log = logging.getLogger(__name__)

EjectCallback = Callable[[str, str, str], None]  # (service, instance_id, reason)


class Route:
    def __init__(
        self,
        service: str,
        settings: ProxySettings,
        *,
        hold_timeout: float,
        on_eject: EjectCallback | None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.hold_timeout = hold_timeout
        self.on_eject = on_eject
        self.counters = RouteCounters()
        self.backends: dict[str, BackendState] = {}  # the routed set, by instance id
        self.departed: set[BackendState] = set()  # left the routed set, requests in flight
        self.balancer: SmoothWeighted[BackendState] = SmoothWeighted([])
        self.clients: set[ClientConn] = set()
        self.held: list[tuple[ClientConn, Request]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.sock: socket.socket | None = None
        self.host = ""
        self.port = 0
        self.closed = False
        self.retiring = False  # handing over to another process: close after each response
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    # -- listening --------------------------------------------------------------------------

    async def serve(self, sock: socket.socket) -> None:
        """Accept clients on `sock` (already listening); a previous listener is closed."""
        server = await self._loop.create_server(
            lambda: ClientConn(self), sock=sock, backlog=self.settings.backlog
        )
        old = self._server
        self._server, self.sock = server, sock
        self.host, self.port = sock.getsockname()[:2]
        if old is not None:
            old.close()
        if self._sweeper is None:
            self._sweep()

    async def retire(self, timeout: float) -> None:
        """Stop accepting and let each client connection end after its next response.

        Used when another process took over the listening socket: clients reconnect there,
        and no connection is refused or cut mid-request. Connections still open at the
        timeout are closed."""
        self.retiring = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        deadline = self._loop.time() + timeout
        while self.clients and self._loop.time() < deadline:
            await asyncio.sleep(0.02)
        await self.close()

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        held, self.held = self.held, []
        for _, req in held:
            if req.hold_timer is not None:
                req.hold_timer.cancel()
                req.hold_timer = None
        for task in self.tasks:
            task.cancel()
        self.closed = True
        self.balancer = SmoothWeighted([])
        for client in list(self.clients):
            client.shutdown()
        for state in [*self.backends.values(), *self.departed]:
            state.routed = False
            state.close_idle()
            state.wake()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        # let the transports closed above run connection_lost before the loop may stop
        for _ in range(3):
            await asyncio.sleep(0)

    # -- the routed set ---------------------------------------------------------------------

    def set_backends(self, backends: Iterable[Backend]) -> None:
        wanted = list(backends)
        check_backends(wanted)
        current = self.backends
        routed: dict[str, BackendState] = {}
        for backend in wanted:
            state = current.get(backend.instance_id)
            if state is not None and state.same_backend(backend):
                state.backend = backend  # a new weight keeps the pool and the ejection
            else:
                state = BackendState(backend, self.counters.release(backend.release))
            routed[backend.instance_id] = state
        for instance_id, state in current.items():
            if routed.get(instance_id) is not state:
                self._retire(state)
        self.backends = routed
        self._rebalance()

    def _retire(self, state: BackendState) -> None:
        """Out of routing: no new request from now on (law 6); in-flight ones finish."""
        state.routed = False
        state.close_idle()
        if state.in_flight:
            self.departed.add(state)

    def _rebalance(self) -> None:
        self.balancer = SmoothWeighted(
            [(state, state.backend.weight) for state in self.backends.values() if not state.ejected]
        )
        if self.held and len(self.balancer):
            self._release_held()

    async def drain(self, instance_ids: Iterable[str], timeout: float) -> int:
        wanted = set(instance_ids)
        if wanted & self.backends.keys():
            self.set_backends([s.backend for key, s in self.backends.items() if key not in wanted])
        busy = [s for s in self.departed if s.instance_id in wanted and s.in_flight]
        if not busy:
            return 0
        waiters = [state.until_idle() for state in busy]
        _, pending = await asyncio.wait(waiters, timeout=max(timeout, 0.0))
        for waiter in pending:
            waiter.cancel()
        return sum(state.in_flight for state in busy)

    def eject(self, state: BackendState, reason: str) -> None:
        """Take a failing backend out of routing at once (it stays out until a routed set
        without it, or `readmit`): the next requests must not meet the same failure."""
        if state.ejected or not state.routed:
            return
        state.ejected = True
        state.close_idle()
        self._rebalance()
        if self.on_eject is not None:
            try:
                self.on_eject(self.service, state.instance_id, reason)
            except Exception:
                log.exception("on_eject hook failed for %s/%s", self.service, state.instance_id)

    def readmit(self, instance_id: str) -> bool:
        state = self.backends.get(instance_id)
        if state is None or not state.ejected:
            return False
        state.ejected = False
        self._rebalance()
        return True

    def snapshot(self) -> RouteStats:
        ejected = {key for key, state in self.backends.items() if state.ejected}
        return self.counters.snapshot(self.service, self.port, ejected)

    # -- one request ------------------------------------------------------------------------

    def dispatch(self, client: ClientConn, req: Request) -> None:
        """Send `req` to the next backend, or hold it until one is routed."""
        state = self.balancer.pick()
        if state is None:
            if self.closed:
                client.fail(req, 503)
            else:
                self._hold(client, req)
            return
        req.backend = state
        req.in_flight = True
        state.begin()
        conn = state.acquire()
        if conn is None:
            task = self._loop.create_task(self._open(state, client, req))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            client.attach(conn, req)

    async def _open(self, state: BackendState, client: ClientConn, req: Request) -> None:
        backend = state.backend
        timeout = self.settings.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                _, conn = await self._loop.create_connection(
                    lambda: BackendConn(state), backend.host, backend.port
                )
        except TimeoutError:
            reason = f"no connection within {timeout:g}s"
        except ConnectionRefusedError:
            reason = "connection refused"
        except OSError as exc:
            reason = f"connection failed: {exc.strerror or exc}"
        else:
            self._connected(state, conn, client, req)
            return
        if req.backend is state and req.in_flight and req.conn is None and not req.finished:
            client.attempt_failed(req, reason)
        else:
            self.eject(state, reason)

    def _connected(
        self, state: BackendState, conn: BackendConn, client: ClientConn, req: Request
    ) -> None:
        if req.backend is not state or req.finished or client.active is not req:
            # the request went away meanwhile; the connection is good for the next one
            state.release(conn, now(), self.settings.max_idle_per_backend)
        elif conn.closed:
            client.attempt_failed(req, "connection closed right after accept")
        elif not state.routed or state.ejected:
            # it left routing while we connected; nothing was sent: the request goes elsewhere
            conn.close()
            client.end_attempt(req)
            req.backend = None
            self.dispatch(client, req)
        else:
            client.attach(conn, req)

    def _hold(self, client: ClientConn, req: Request) -> None:
        """No routable backend: wait for one (a hand-over in progress) instead of refusing."""
        req.hold_timer = self._loop.call_later(self.hold_timeout, self._hold_expired, client, req)
        self.held.append((client, req))

    def _hold_expired(self, client: ClientConn, req: Request) -> None:
        self._unhold(client, req)
        if client.active is req and not req.finished:
            client.fail(req, 503)

    def _unhold(self, client: ClientConn, req: Request) -> None:
        if req.hold_timer is not None:
            req.hold_timer.cancel()
            req.hold_timer = None
            with contextlib.suppress(ValueError):
                self.held.remove((client, req))

    def _release_held(self) -> None:
        held, self.held = self.held, []
        for client, req in held:
            if req.hold_timer is not None:
                req.hold_timer.cancel()
                req.hold_timer = None
            if client.active is req and not req.finished and not client.closed:
                self.dispatch(client, req)

    def abandon(self, client: ClientConn, req: Request) -> None:
        """The client went away before its answer was complete."""
        self._unhold(client, req)
        if req.conn is not None:
            req.conn.close()  # half-relayed answer: the connection cannot be reused
        self.counters.requests += 1
        if req.backend is not None:
            req.backend.counters.requests += 1
        client.end_attempt(req)
        req.finished = True

    # -- timeouts ---------------------------------------------------------------------------

    def _sweep(self) -> None:
        at = now()
        for client in list(self.clients):
            client.check(at)
        oldest = at - self.settings.pool_idle_timeout
        for state in self.backends.values():
            if state.idle:
                state.evict_idle(oldest)
        self._sweeper = self._loop.call_later(self._interval(), self._sweep)

    def _interval(self) -> float:
        s = self.settings
        shortest = min(
            s.backend_timeout, s.header_timeout, s.client_idle_timeout, s.pool_idle_timeout
        )
        return min(max(shortest / 4, 0.02), 1.0)
