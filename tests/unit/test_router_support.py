"""Helpers for the router tests (no tests here): a small HTTP/1.1 app standing in for an
instance, a raw keep-alive client, a port that refuses, and runners for both event loops.

The app and the client use h11, not httptools, so the router's parsing is checked by an
independent implementation of HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import h11
import uvloop

from corral.router.protocol import Backend

T = TypeVar("T")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run(loop: str, scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a test scenario on a fresh event loop of the given kind."""
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(asyncio.wait_for(scenario(), 60))


def pattern(size: int) -> bytes:
    """Deterministic bytes to check a large body end to end."""
    block = bytes(range(256)) * 256
    return (block * (size // len(block) + 1))[:size]


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which backend connection carried it


@dataclass
class AppServer:
    """A tiny app behind the router. Paths: /who (its name), /echo (the body back),
    /headers (the request headers as JSON), /big?n= (n bytes, chunked), /slow (waits for
    `gate`), /status/<code>, /close (answers with Connection: close), /nolength (body ended
    by closing the connection)."""

    name: str
    drop: bool = False  # close the connection at the next request without answering
    close_after_response: bool = False  # close each connection after one answer (no header)
    requests: list[Seen] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    open_connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _connections: int = 0

    async def start(self) -> AppServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def backend(self, release: str = "r1", weight: int = 1) -> Backend:
        return Backend(self.name, release, "127.0.0.1", self.port, weight)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.gate.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._connections += 1
        self.open_connections += 1
        number = self._connections
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _next_event(conn, reader)
                if not isinstance(request, h11.Request):
                    return
                body = b""
                while True:
                    event = await _next_event(conn, reader)
                    if isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                headers = {k.decode().lower(): v.decode() for k, v in request.headers}
                target = request.target.decode()
                self.requests.append(Seen(request.method.decode(), target, headers, body, number))
                if self.drop:
                    self.drop = False
                    return
                if not await self._respond(conn, writer, request.method, target, body):
                    return
                if self.close_after_response or conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self.open_connections -= 1

    async def _respond(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        method: bytes,
        target: str,
        body: bytes,
    ) -> bool:
        url = urlsplit(target)
        path = url.path
        status, headers, payload = 200, [("x-backend", self.name)], self.name.encode()
        if path == "/echo":
            payload = body
        elif path == "/headers":
            payload = json.dumps(self.requests[-1].headers).encode()
        elif path == "/slow":
            self.started.set()
            await self.gate.wait()
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            payload = b"" if status in (204, 304) else payload
        elif path == "/close":
            headers.append(("connection", "close"))
        elif path == "/nolength":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + payload * 3)
            await writer.drain()
            return False
        elif path == "/big":
            size = int(parse_qs(url.query)["n"][0])
            writer.write(conn.send(h11.Response(status_code=200, headers=headers)) or b"")
            data = pattern(size)
            for start in range(0, size, 65536):
                writer.write(conn.send(h11.Data(data=data[start : start + 65536])) or b"")
                await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            return True
        if status not in (204, 304):
            headers.append(("content-length", str(len(payload))))
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        if method != b"HEAD" and payload:
            writer.write(conn.send(h11.Data(data=payload)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        return True


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
            continue
        return event


@contextlib.asynccontextmanager
async def apps(*names: str) -> AsyncIterator[list[AppServer]]:
    started: list[AppServer] = []
    try:
        for name in names:
            started.append(await AppServer(name).start())
        yield started
    finally:
        for app in started:
            await app.close()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class RawClient:
    """One keep-alive client connection; requests are written as given (so tests control
    every header, pipelining and HTTP/1.0), answers parsed with h11."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> RawClient:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Reply:
        self._next_cycle()
        hdrs = [("host", "test"), *(headers or [])]
        if body:
            hdrs.append(("content-length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=hdrs)) or b""
        if body:
            data += self.conn.send(h11.Data(data=body)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        self.writer.write(data)
        return await self.reply(head_only=method == "HEAD")

    async def reply(self, *, head_only: bool = False) -> Reply:
        """The next answer. Raw-written requests are announced to h11 by `expect`."""
        self._next_cycle()
        if self.conn.our_state is h11.IDLE:
            # the request went out through send_raw: tell h11 what it was
            method = "HEAD" if head_only else "GET"
            self.conn.send(h11.Request(method=method, target="/", headers=[("host", "t")]))
            self.conn.send(h11.EndOfMessage())
        response = await _next_event(self.conn, self.reader)
        assert isinstance(response, h11.Response), response
        body = b""
        while True:
            event = await _next_event(self.conn, self.reader)
            if isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected {event!r}")
        headers = {k.decode().lower(): v.decode() for k, v in response.headers}
        return Reply(response.status_code, headers, body)

    def _next_cycle(self) -> None:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()

    async def at_eof(self) -> bool:
        """The router closed this connection (after its last answer)."""
        return await asyncio.wait_for(self.reader.read(1), 5) == b""


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port whose connections are refused: bound (so nobody else takes it), not listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `check()` holds (state reached through the event loop, not a timing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        await asyncio.sleep(0.01)
