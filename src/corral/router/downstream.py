"""One client connection to a route: parses requests, sends each to a backend, relays answers.

Requests on a connection are served one after the other (pipelined ones wait in a queue).
The request head is rebuilt for the backend (hop-by-hop headers dropped, X-Forwarded-For
added); its body is streamed as it arrives, re-framed as chunks when it came chunked.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from corral.router.wire import (
    LAST_CHUNK,
    REQUEST_HOP_BY_HOP,
    SPECIAL_REQUEST_LENGTHS,
    chunk,
    connection_names,
    error_response,
)

if TYPE_CHECKING:
    from corral.router.pool import BackendState
    from corral.router.route import Route
    from corral.router.upstream import BackendConn

now = time.monotonic

# reading from the client pauses while the backend cannot take more, or while too much
# of the client's data waits for a backend (pipelined requests, bodies of held requests)
_PAUSE_BACKEND = 1
_PAUSE_BUFFER = 2
_MAX_BUFFERED = 256 * 1024
_MAX_QUEUED = 16

_IDEMPOTENT = frozenset({b"GET", b"HEAD"})
_HTTP11_LINE = b" HTTP/1.1\r\n"
# an HTTP/1.0 client is proxied as HTTP/1.0 (so the backend never answers chunked), kept alive
_HTTP10_LINE = b" HTTP/1.0\r\nConnection: keep-alive\r\n"


class Request:
    """One request of a client connection, from its head to the end of its response."""

    __slots__ = (
        "attempts",
        "backend",
        "body",
        "body_done",
        "buffered",
        "chunked",
        "close_after",
        "conn",
        "finished",
        "head",
        "head_only",
        "hold_timer",
        "http10",
        "in_flight",
        "keep_alive",
        "retryable",
        "t0",
    )

    def __init__(
        self, head: bytes, head_only: bool, keep_alive: bool, http10: bool, chunked: bool
    ) -> None:
        self.head = head  # as sent to the backend
        self.head_only = head_only  # HEAD: the answer has no body
        self.keep_alive = keep_alive
        self.http10 = http10
        self.chunked = chunked
        self.retryable = False
        self.body: list[bytes] = []  # body bytes (framed for the backend) not yet sent
        self.buffered = 0
        self.body_done = False
        self.close_after = False
        self.finished = False
        self.attempts = 0
        self.backend: BackendState | None = None  # chosen backend of the current attempt
        self.in_flight = False  # counted in backend.in_flight
        self.conn: BackendConn | None = None
        self.hold_timer: asyncio.TimerHandle | None = None
        self.t0 = 0.0


class ClientConn(asyncio.Protocol):
    __slots__ = (
        "_chunked",
        "_connection",
        "_in_head",
        "_ip",
        "_length",
        "_lines",
        "_url",
        "_xff",
        "active",
        "buffered",
        "closed",
        "done_reading",
        "mark",
        "mark_at",
        "parser",
        "parsing",
        "paused",
        "queue",
        "route",
        "rx",
        "transport",
        "write_paused",
    )

    def __init__(self, route: Route) -> None:
        self.route = route
        self.transport: Any = None
        self.parser = HttpRequestParser(self)
        self.closed = False
        self.active: Request | None = None  # the request being served
        self.parsing: Request | None = None  # the request whose body is being read
        self.queue: deque[Request] = deque()  # pipelined requests waiting for their turn
        self.buffered = 0  # body bytes held for requests that have no backend connection yet
        self.paused = 0
        self.write_paused = False
        self.done_reading = False  # a request ended the connection: what follows is ignored
        self.rx = 0
        self.mark: tuple[object, ...] = ()
        self.mark_at = 0.0
        self._ip = b""
        self._in_head = False
        self._url = b""
        self._lines: list[bytes] = []
        self._xff = b""
        self._connection = b""
        self._length = b""
        self._chunked = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self._ip = str(peer[0]).encode() if isinstance(peer, tuple) else b"unknown"
        self.route.clients.add(self)

    def data_received(self, data: bytes) -> None:
        if self.done_reading:
            return
        self.rx += 1
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            # an Upgrade/CONNECT request was proxied as a plain one (Upgrade is hop-by-hop);
            # the bytes after it belong to another protocol: this connection ends with it
            self._stop_reading()
        except HttpParserError:
            self._bad_request()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return  # shut down by the router: already accounted for
        self.closed = True
        self.route.clients.discard(self)
        req, self.active = self.active, None
        self.queue.clear()
        if req is not None and not req.finished:
            self.route.abandon(self, req)

    def pause_writing(self) -> None:
        # the client reads slower than the backend answers: stop reading from the backend
        self.write_paused = True
        conn = self.active.conn if self.active is not None else None
        if conn is not None and not conn.read_paused and not conn.closed:
            conn.read_paused = True
            conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        conn = self.active.conn if self.active is not None else None
        if conn is not None and conn.read_paused and not conn.closed:
            conn.read_paused = False
            conn.transport.resume_reading()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        if self._in_head:  # the request line arrived in pieces
            self._url += url
            return
        self._in_head = True
        self._url = url
        self._lines = []
        self._xff = self._connection = self._length = b""
        self._chunked = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # trailer fields of a chunked body are not forwarded
        if len(name) in SPECIAL_REQUEST_LENGTHS:
            lname = name.lower()
            if lname in REQUEST_HOP_BY_HOP:
                if lname == b"connection":
                    self._connection += b"," + value
                return
            if lname == b"x-forwarded-for":
                self._xff = self._xff + b", " + value if self._xff else value
                return
            if lname == b"transfer-encoding":
                self._chunked = value.rstrip().lower().endswith(b"chunked")
            elif lname == b"content-length":
                self._length = value
        self._lines += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        method = parser.get_method()
        http10 = parser.get_http_version() == "1.0"
        lines = self._lines
        if self._connection:
            names = connection_names(self._connection)
            if names:
                lines = _without_headers(lines, names)
        xff = self._xff + b", " + self._ip if self._xff else self._ip
        head = b"".join(
            (
                method,
                b" ",
                self._url,
                _HTTP10_LINE if http10 else _HTTP11_LINE,
                *lines,
                b"X-Forwarded-For: ",
                xff,
                b"\r\n\r\n",
            )
        )
        chunked = self._chunked
        req = Request(head, method == b"HEAD", parser.should_keep_alive(), http10, chunked)
        # a retry resends the head only: safe for idempotent requests without a body
        req.retryable = (
            method in _IDEMPOTENT and not chunked and (not self._length or self._length == b"0")
        )
        req.t0 = now()
        self.parsing = req
        if self.active is None:
            self.active = req
            self.route.dispatch(self, req)
        else:
            self.queue.append(req)
            if len(self.queue) >= _MAX_QUEUED:
                self._pause(_PAUSE_BUFFER)

    def on_body(self, body: bytes) -> None:
        req = self.parsing
        if req is None:
            return
        self._send_body(req, chunk(body) if req.chunked else body)

    def on_message_complete(self) -> None:
        req = self.parsing
        if req is None:
            return
        self.parsing = None
        if req.chunked:
            self._send_body(req, LAST_CHUNK)
        req.body_done = True
        if not req.keep_alive:
            self._stop_reading()

    def _send_body(self, req: Request, data: bytes) -> None:
        conn = req.conn
        if conn is not None:
            if not conn.closed:
                conn.transport.write(data)
        elif not req.finished:
            req.body.append(data)
            req.buffered += len(data)
            self.buffered += len(data)
            if self.buffered > _MAX_BUFFERED:
                self._pause(_PAUSE_BUFFER)

    # -- flow control -----------------------------------------------------------------------

    def _pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def pause_for_backend(self) -> None:
        self._pause(_PAUSE_BACKEND)

    def resume_for_backend(self) -> None:
        self._resume(_PAUSE_BACKEND)

    def _stop_reading(self) -> None:
        self.done_reading = True
        last = self.parsing or (self.queue[-1] if self.queue else self.active)
        if last is not None:
            last.keep_alive = False

    # -- the request's journey --------------------------------------------------------------

    def attach(self, conn: BackendConn, req: Request) -> None:
        """Send `req` on `conn`; from now on its body streams straight to the backend."""
        req.conn = conn
        if req.body:
            payload = b"".join((req.head, *req.body))
            req.body = []
            self.buffered -= req.buffered
            req.buffered = 0
            if self.paused & _PAUSE_BUFFER:
                self._check_buffer()
        else:
            payload = req.head
        conn.start(self, req, payload)
        if self.write_paused and not conn.read_paused:
            conn.read_paused = True
            conn.transport.pause_reading()

    def response_done(self, conn: BackendConn) -> None:
        """The backend's answer has been relayed in full."""
        req = conn.req
        assert req is not None
        t_end = now()
        route = self.route
        route.counters.requests += 1
        backend = self.end_attempt(req)
        if backend is not None:
            backend.counters.observe(conn.status, t_end - req.t0)
        if conn.keep_alive and req.body_done and not conn.until_eof and backend is not None:
            backend.release(conn, t_end, route.settings.max_idle_per_backend)
        else:
            conn.close()
        self._next(req)

    def fail(self, req: Request, status: int) -> None:
        """Answer with an error made by the router (the attempt, if any, has ended)."""
        route = self.route
        route.counters.requests += 1
        route.counters.router_errors += 1
        if req.backend is not None:
            req.backend.counters.requests += 1
            req.backend.counters.router_errors += 1
        if self.closed:
            req.finished = True
            return
        req.close_after = close = not req.keep_alive or not req.body_done
        self.transport.write(error_response(status, close=close, head_only=req.head_only))
        self._next(req)

    def _next(self, req: Request) -> None:
        req.finished = True
        self.active = None
        if req.buffered:
            self.buffered -= req.buffered
            req.buffered = 0
            req.body = []
        if req.close_after:
            self.done_reading = True
            self.queue.clear()
            self.transport.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            self.active = nxt
            if self.paused & _PAUSE_BUFFER:
                self._check_buffer()
            self.route.dispatch(self, nxt)

    def _check_buffer(self) -> None:
        if self.buffered <= _MAX_BUFFERED and len(self.queue) < _MAX_QUEUED:
            self._resume(_PAUSE_BUFFER)

    def end_attempt(self, req: Request) -> BackendState | None:
        """Stop counting `req` as in flight on its backend; the backend is returned."""
        backend = req.backend
        if backend is not None and req.in_flight:
            req.in_flight = False
            backend.end()
            if not backend.in_flight and not backend.routed:
                self.route.departed.discard(backend)
        conn, req.conn = req.conn, None
        if conn is not None:
            conn.detach()
            self._resume(_PAUSE_BACKEND)
        return backend

    def attempt_failed(self, req: Request, reason: str) -> None:
        """The backend failed before any byte of an answer: eject it, retry if safe, or 502."""
        backend = self.end_attempt(req)
        route = self.route
        if backend is not None:
            route.eject(backend, reason)
        if req.retryable and req.attempts < route.settings.retries and not self.closed:
            req.attempts += 1
            route.counters.retries += 1
            req.backend = None
            route.dispatch(self, req)
        else:
            self.fail(req, 502)

    def backend_lost(self, conn: BackendConn, exc: Exception | None) -> None:
        """The backend connection closed while serving `conn.req`."""
        req = conn.req
        if req is None:
            return
        if conn.head_sent:
            if conn.until_eof:
                conn.complete = True
                self.response_done(conn)
                return
            # cut in the middle of a body: the client can only learn it by a close
            self.end_attempt(req)
            self._count_failure(req)
            self._abort(req)
        elif conn.got_bytes:
            self.end_attempt(req)
            self.fail(req, 502)
        else:
            reason = "connection reset" if exc is not None else "connection closed"
            self.attempt_failed(req, f"{reason} before any response byte")

    def backend_broken(self, conn: BackendConn) -> None:
        """The backend's answer is not HTTP (or its head is absurdly large)."""
        req = conn.req
        conn.close()
        if req is None:
            return
        self.end_attempt(req)
        if conn.head_sent:
            self._count_failure(req)
            self._abort(req)
        else:
            self.fail(req, 502)

    def backend_timed_out(self, conn: BackendConn) -> None:
        req = conn.req
        conn.close()
        if req is None:
            return
        self.end_attempt(req)
        if conn.head_sent:
            self._count_failure(req)
            self._abort(req)
        else:
            self.fail(req, 504)

    def _count_failure(self, req: Request) -> None:
        route = self.route
        route.counters.requests += 1
        route.counters.router_errors += 1
        if req.backend is not None:
            req.backend.counters.requests += 1
            req.backend.counters.router_errors += 1

    def _abort(self, req: Request) -> None:
        req.finished = True
        self.active = None
        self.done_reading = True
        self.queue.clear()
        self.transport.close()

    def _bad_request(self) -> None:
        if self.closed:
            return
        if self.parsing is not None:
            # a malformed body: the request it belongs to cannot be completed
            self.shutdown()
        elif self.active is None:
            self.done_reading = True
            self.transport.write(error_response(400, close=True, head_only=False))
            self.transport.close()
        else:
            self._stop_reading()  # answer the requests read so far, then close

    def shutdown(self) -> None:
        """Cut this connection now, abandoning its request (the route closes, or the client
        sent garbage in the middle of a body)."""
        if self.closed:
            return
        self.closed = True
        self.done_reading = True
        self.route.clients.discard(self)
        req, self.active = self.active, None
        self.queue.clear()
        if req is not None and not req.finished:
            self.route.abandon(self, req)
        self.transport.abort()

    # -- timeouts (called by the route's sweep) ---------------------------------------------

    def check(self, at: float) -> None:
        req = self.active
        conn = req.conn if req is not None else None
        mark = (req, self.rx, conn.rx if conn is not None else 0)
        if mark != self.mark:
            self.mark = mark
            self.mark_at = at
            return
        stalled = at - self.mark_at
        settings = self.route.settings
        if req is None:
            limit = settings.header_timeout if self._in_head else settings.client_idle_timeout
            if stalled > limit and not self.closed:
                self.done_reading = True
                self.transport.close()
        elif conn is not None and stalled > settings.backend_timeout:
            self.backend_timed_out(conn)


def _without_headers(lines: list[bytes], names: list[bytes]) -> list[bytes]:
    """`lines` (name, ": ", value, CRLF groups) without the headers a Connection header named."""
    kept: list[bytes] = []
    for index in range(0, len(lines), 4):
        if lines[index].lower() not in names:
            kept += lines[index : index + 4]
    return kept
