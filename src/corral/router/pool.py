"""One backend as the proxy sees it: its routing status, in-flight count and idle connections."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from corral.router.protocol import Backend
from corral.router.stats import ReleaseCounters

if TYPE_CHECKING:
    from corral.router.upstream import BackendConn


class BackendState:
    """Lives as long as the backend stays in the routed set with the same address and label,
    and after it leaves, as long as requests it serves are in flight (so `drain` can wait)."""

    __slots__ = (
        "backend",
        "counters",
        "ejected",
        "idle",
        "in_flight",
        "routed",
        "waiters",
    )

    def __init__(self, backend: Backend, counters: ReleaseCounters) -> None:
        self.backend = backend
        self.counters = counters  # shared by every backend of the same release
        self.in_flight = 0
        self.routed = True
        self.ejected = False
        self.idle: list[BackendConn] = []  # LIFO: the most recently used is the least stale
        self.waiters: list[asyncio.Future[None]] = []

    @property
    def instance_id(self) -> str:
        return self.backend.instance_id

    def same_backend(self, other: Backend) -> bool:
        """`other` is this backend (maybe with a new weight), not a new one at its id."""
        mine = self.backend
        return (mine.host, mine.port, mine.release) == (other.host, other.port, other.release)

    def acquire(self) -> BackendConn | None:
        """An idle keep-alive connection still open; one the backend closed is skipped (the
        classic keep-alive race is not a failure of the backend)."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    def release(self, conn: BackendConn, now: float, max_idle: int) -> None:
        if self.routed and not self.ejected and not conn.closed and len(self.idle) < max_idle:
            conn.idle_since = now
            self.idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: BackendConn) -> None:
        """An idle connection closed by the backend."""
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

    def evict_idle(self, older_than: float) -> None:
        idle = self.idle
        if idle and idle[0].idle_since < older_than:
            keep = [conn for conn in idle if conn.idle_since >= older_than]
            for conn in idle:
                if conn.idle_since < older_than:
                    conn.close()
            self.idle = keep

    def begin(self) -> None:
        self.in_flight += 1
        self.counters.in_flight += 1

    def end(self) -> None:
        self.in_flight -= 1
        self.counters.in_flight -= 1
        if not self.in_flight and self.waiters:
            self.wake()

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def until_idle(self) -> asyncio.Future[None]:
        """Resolves when no request is in flight on this backend."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.in_flight:
            self.waiters.append(waiter)
        else:
            waiter.set_result(None)
        return waiter
