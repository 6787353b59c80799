"""The per-instance log collector: a tiny process that reads an instance's stdout and stderr
pipes and appends each line, stamped with the time it arrived and its stream, to the
instance's log file, rotating it by the retention policy.

Why a process of its own per instance, and not the agent: instances outlive the agent
(`corral agent restart`, or a killed agent). Were the agent the reader, its death would close
the pipes (the app gets EPIPE, or blocks once the pipe fills while a successor is not yet
reading) and lines written meanwhile would be lost or stamped late. The collector starts with
the instance in a session of its own, holds the only read ends, never waits for anyone, and
ends when both pipes reach end-of-file: when the app and every process that inherited its
output have ended.

Run as `python -I -m corral.logs.collector LOG MAX_SIZE MAX_AGE [FORWARD APP PROCID K=V…]`
with the stdout pipe's read end on fd 3 and the stderr pipe's on fd 4. With FORWARD (a syslog
URL, corral.logs.forward) each line is also sent there as RFC 5424, APP (the service) and
PROCID (the instance) in its header and the K=V pairs as structured data.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from corral.logs.format import format_time, stamp
from corral.logs.forward import Forwarder, message, parse_target, structured_data
from corral.logs.retention import LogPolicy, rotate

STDOUT_FD, STDERR_FD = 3, 4
MAX_LINE = 64 * 1024  # a longer line is stored in pieces of this size
_READ = 65536


class _Sink:
    """The log file, appended to and rotated by the policy."""

    def __init__(self, path: Path, policy: LogPolicy) -> None:
        self.path = path
        self.policy = policy
        self._open()

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.size = os.fstat(self.fd).st_size
        self.begun = time.time()

    def write(self, data: bytes) -> None:
        if self.policy.should_rotate(self.size, len(data), self.begun, time.time()):
            os.close(self.fd)
            rotate(self.path)
            self._open()
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.size += len(data)


OnLine = Callable[[bytes, str, float], None]


def collect(fds: dict[int, str], sink: _Sink, on_line: OnLine | None = None) -> None:
    """Read every fd until end-of-file, writing each complete line as it arrives; a partial
    line is kept (stamped with the time its first byte came) until its newline or EOF."""
    pending: dict[int, tuple[float, bytearray]] = {}
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            for key, _ in selector.select():
                fd = int(key.fd)
                try:
                    chunk = os.read(fd, _READ)
                except BlockingIOError:
                    continue
                now = time.time()
                at, buffer = pending.pop(fd, (now, bytearray()))
                if not chunk:  # end-of-file: flush what is left unterminated
                    selector.unregister(fd)
                    os.close(fd)
                    if buffer:
                        sink.write(stamp(bytes(buffer), fds[fd], at))
                        if on_line is not None:
                            on_line(bytes(buffer), fds[fd], at)
                    continue
                buffer += chunk
                out = bytearray()
                while (end := buffer.find(b"\n")) >= 0 or len(buffer) >= MAX_LINE:
                    cut = end if 0 <= end < MAX_LINE else MAX_LINE
                    out += stamp(bytes(buffer[:cut]), fds[fd], at)
                    if on_line is not None:
                        on_line(bytes(buffer[:cut]), fds[fd], at)
                    del buffer[: cut + 1 if cut == end else cut]
                    at = now  # the next line arrived with this chunk
                if out:
                    sink.write(bytes(out))
                if buffer:
                    pending[fd] = (at, buffer)


def main(argv: list[str]) -> int:
    path, max_size, max_age = Path(argv[0]), int(argv[1]), float(argv[2])
    # The app's lines must outlive any terminal or signal aimed at the agent; the collector
    # ends only at end-of-file (SIGKILL aside).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    sink = _Sink(path, LogPolicy(max_size, max_age))
    forwarder, on_line = _forwarding(argv[3:])
    collect({STDOUT_FD: "stdout", STDERR_FD: "stderr"}, sink, on_line)
    if forwarder is not None:
        forwarder.close()
    return 0


def _forwarding(args: list[str]) -> tuple[Forwarder | None, OnLine | None]:
    if not args or not args[0]:
        return None, None
    url, app, procid, *pairs = args
    forwarder = Forwarder(parse_target(url))
    data = structured_data(**dict(pair.split("=", 1) for pair in pairs))
    host = socket.gethostname() or "-"

    def send(text: bytes, stream: str, at: float) -> None:
        when = format_time(datetime.fromtimestamp(at, UTC))
        forwarder.send(message(when, stream, text, host=host, app=app, procid=procid, data=data))

    return forwarder, send


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
