"""Shipping collected lines to a central syslog server (RFC 5424), from the collector.

`logs: {forward: syslog://HOST:PORT}` sends over UDP (one datagram a line), and
`syslog+tcp://HOST:PORT` over TCP with octet counting (RFC 6587). Forwarding never holds the
app up: sends are non-blocking, what TCP cannot take yet waits in a bounded buffer (the
oldest lines are dropped past it), and a lost connection is retried at most every few
seconds. The local file stays the record; the server gets a best-effort copy.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

SCHEMES = {"syslog": "udp", "syslog+udp": "udp", "syslog+tcp": "tcp"}
BUFFER = 1024 * 1024  # bytes waiting for a slow TCP server, at most
RETRY = 5.0  # seconds between connection attempts
_FACILITY_USER = 1
_SEVERITY = {"stdout": 6, "stderr": 3}  # info, err


@dataclass(frozen=True)
class Target:
    transport: str  # udp | tcp
    host: str
    port: int


def parse_target(url: str) -> Target:
    """`syslog://127.0.0.1:5514` (UDP), `syslog+tcp://…`, `syslog+udp://…`."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname or parts.port is None:
        raise ValueError(
            f"{url!r} is not a syslog address: write syslog://HOST:PORT (UDP) or "
            "syslog+tcp://HOST:PORT"
        )
    return Target(SCHEMES[parts.scheme], parts.hostname, parts.port)


def message(
    stamp: str, stream: str, text: bytes, *, host: str, app: str, procid: str, data: str
) -> bytes:
    """One RFC 5424 message: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG`."""
    pri = _FACILITY_USER * 8 + _SEVERITY.get(stream, 5)
    head = f"<{pri}>1 {stamp} {host} {app} {procid} {stream} {data} "
    return head.encode() + text


def structured_data(**params: str) -> str:
    """`[corral@32473 key="value" …]`, values escaped as RFC 5424 asks."""
    escaped = (
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'.replace(
            "]", "\\]"
        )
        for k, v in params.items()
    )
    return "[corral@32473 " + " ".join(escaped) + "]"


class Forwarder:
    """Sends messages to one target without ever blocking."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._sock: socket.socket | None = None
        self._pending = bytearray()
        self._tried = 0.0

    def send(self, msg: bytes) -> None:
        if self.target.transport == "udp":
            self._send_udp(msg)
        else:
            self._pending += str(len(msg)).encode() + b" " + msg
            if len(self._pending) > BUFFER:  # a slow or absent server: drop the oldest
                del self._pending[: len(self._pending) - BUFFER]
            self.flush()

    def flush(self) -> None:
        sock = self._connected()
        while sock is not None and self._pending:
            try:
                sent = sock.send(self._pending)
            except BlockingIOError:
                return
            except OSError:
                self._drop()
                return
            del self._pending[:sent]

    def close(self, wait: float = 1.0) -> None:
        """Flush what is pending (for at most `wait` seconds), then close."""
        deadline = time.monotonic() + wait
        while self._pending and time.monotonic() < deadline:
            self.flush()
            time.sleep(0.01)
        self._drop()

    def _send_udp(self, msg: bytes) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        with contextlib.suppress(OSError):  # best effort: the file keeps the line
            self._sock.sendto(msg[:65000], (self.target.host, self.target.port))

    def _connected(self) -> socket.socket | None:
        if self._sock is not None:
            return self._sock
        now = time.monotonic()
        if now - self._tried < RETRY:
            return None
        self._tried = now
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex((self.target.host, self.target.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            return None
        self._sock = sock
        return sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
