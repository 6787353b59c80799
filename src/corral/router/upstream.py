"""One keep-alive connection from the router to a backend, serving one request at a time.

The response is passed to the client as the bytes arrive: only the head is rewritten
(hop-by-hop headers, the router's own `Connection` decision); the body, chunked or not, is
forwarded untouched. The parser is there to find where the response ends, so it has no
`on_header`/`on_body` callbacks: httptools then skips those calls into Python entirely.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from httptools import HttpParserError, HttpResponseParser

from corral.router.wire import (
    MAX_HEAD,
    NO_BODY_STATUSES,
    is_framed,
    response_status,
    rewrite_response_head,
)

if TYPE_CHECKING:
    from corral.router.downstream import ClientConn, Request
    from corral.router.pool import BackendState


class BackendConn(asyncio.Protocol):
    __slots__ = (
        "buf",
        "client",
        "closed",
        "complete",
        "got_bytes",
        "head_sent",
        "idle_since",
        "keep_alive",
        "parser",
        "read_paused",
        "req",
        "rx",
        "state",
        "status",
        "transport",
        "until_eof",
    )

    def __init__(self, state: BackendState) -> None:
        self.state = state
        self.transport: Any = None
        self.parser = HttpResponseParser(self)
        self.client: ClientConn | None = None  # set while a request is on this connection
        self.req: Request | None = None
        self.closed = False
        self.read_paused = False
        self.idle_since = 0.0
        self.rx = 0  # reads so far: the timeout sweep watches it for progress
        self._reset()

    def _reset(self) -> None:
        self.buf = b""  # response head bytes until the blank line has arrived
        self.got_bytes = False
        self.head_sent = False
        self.complete = False
        self.keep_alive = False
        self.until_eof = False  # body ends when the backend closes (no length, not chunked)
        self.status = 0

    def start(self, client: ClientConn, req: Request, payload: bytes) -> None:
        """Send a request (head, and the body bytes read so far) on this connection."""
        self.client = client
        self.req = req
        self._reset()
        self.transport.write(payload)

    def detach(self) -> None:
        self.client = None
        self.req = None
        if self.read_paused:
            self.read_paused = False
            if not self.closed:
                self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            # an idle connection must stay silent; one that talks is out of step: drop it
            self.close()
            return
        self.rx += 1
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except HttpParserError:
            client.backend_broken(self)
            return
        if self.head_sent:
            client.transport.write(data)
        elif not self._take_head(data, client):
            return
        if self.complete:
            client.response_done(self)

    def eof_received(self) -> bool | None:
        self.closed = True
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        client = self.client
        if client is None:
            self.state.forget(self)
        else:
            client.backend_lost(self, exc)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_for_backend()

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_for_backend()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_headers_complete(self) -> None:
        # read here: once the message is complete, the parser forgets its Connection flags
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() >= 200:  # an interim 1xx is followed by the answer
            self.complete = True

    # -- response head ----------------------------------------------------------------------

    def _take_head(self, data: bytes, client: ClientConn) -> bool:
        """Forward the response head once it is whole; False while it is not (or is broken)."""
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    client.backend_broken(self)
                    return False
                self.buf = buf
                return False
            end += 4
            status = response_status(buf)
            if not status:
                client.backend_broken(self)
                return False
            if status >= 200:
                break
            client.transport.write(buf[:end])  # interim response (100 Continue): pass it on
            buf = buf[end:]
            if not buf:
                self.buf = b""
                return False
        self.buf = b""
        req = self.req
        assert req is not None
        head = buf[:end]
        self.status = status
        if (
            not self.keep_alive
            and not req.head_only
            and status not in NO_BODY_STATUSES
            and not is_framed(head)
        ):
            self.until_eof = True
        # the client connection closes after this response if the client asked, if the body
        # is delimited by the close, or if the backend answered before the request body ended
        close = not req.keep_alive or self.until_eof or not req.body_done or client.route.retiring
        req.close_after = close
        out = rewrite_response_head(head, close=close, client_http10=req.http10)
        self.head_sent = True
        if req.head_only:
            # httptools cannot be told a response to HEAD has no body: it would wait for
            # Content-Length bytes. The head is the whole answer; a fresh parser for the next.
            self.complete = True
            self.parser = HttpResponseParser(self)
            if end < len(buf):
                self.keep_alive = False
            client.transport.write(out)
        elif end < len(buf):
            client.transport.write(out + buf[end:])
        else:
            client.transport.write(out)
        return True
