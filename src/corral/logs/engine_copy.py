"""Incremental copies of an engine's log (Docker, Swarm, Kubernetes) into corral's log files.

An engine keeps each container's output with its own stamp per line; corral copies it into
`$CORRAL_HOME/logs/…/<id>.log` so `corral logs` reads every driver alike. A copy appends only
the lines stamped after the file's last line (the file says what was copied, by whichever
process copied it: lines are compared to the microsecond, the stored precision), rotates the
file by size like the local collector (one `.1`), and runs under a lock file in the instance's
directory so that the agent and a CLI observing at once never append a line twice. Reading an
engine's whole log at every copy would cost its size each time; asking for the lines since the
last stamp costs what is new.
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from corral.logs.format import parse
from corral.logs.retention import LogPolicy, files_of, rotate

_TAIL = 64 * 1024  # bytes read from a file's end to find its last stamp
LOCK_NAME = "log.lock"  # in the instance's directory, held while its log is copied


def last_stamp(path: Path) -> int | None:
    """The stamp (ns, to the µs) of the last stamped line of an instance's log: the live file,
    or the rotated one when the live file has none yet."""
    for each in reversed(files_of(path)):
        try:
            with each.open("rb") as file:
                size = file.seek(0, 2)
                file.seek(max(0, size - _TAIL))
                lines = file.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        for line in reversed(lines):
            moment = parse(line).time
            if moment is not None:
                return calendar.timegm(moment.utctimetuple()) * 10**9 + moment.microsecond * 1000
    return None


def _first_stamp(path: Path) -> float | None:
    """When the live file's first line was stamped (s), for rotation by age."""
    try:
        with path.open("rb") as file:
            first = file.readline(_TAIL).decode(errors="replace")
    except FileNotFoundError:
        return None
    moment = parse(first.rstrip("\n")).time
    return None if moment is None else moment.timestamp()


def newer_than(stored: bytes, after: int | None) -> bytes:
    """The stored-form lines (`STAMP STREAM TEXT`) stamped in a later microsecond than
    `after` (ns); every line when `after` is None. An unstamped line is kept."""
    if after is None:
        return stored
    kept = []
    for line in stored.splitlines(keepends=True):
        moment = parse(line.decode(errors="replace").rstrip("\n")).time
        if moment is not None:
            at = calendar.timegm(moment.utctimetuple()) * 10**6 + moment.microsecond
            if at <= after // 1000:
                continue  # the engine's `since` is inclusive (and may be cut): copied before
        kept.append(line)
    return b"".join(kept)


@contextlib.contextmanager
def copying(lock: Path) -> Iterator[bool]:
    """Whether this process may copy now: the CLI's observe (plan, apply) and the agent's may
    run at once, and two copies of the same lines would both be appended. Without the
    instance's directory (it is being removed) there is no one to race with."""
    if not lock.parent.is_dir():
        yield True
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False  # the other one is copying: it will have done it
            return
        yield True
    finally:
        os.close(fd)


def append(path: Path, data: bytes, policy: LogPolicy) -> None:
    """Append `data` (whole lines) to the instance's log, rotating it line by line as the
    collector does, so no file outgrows max_size by more than one line however much a copy
    brings (a copy larger than two files keeps only its newest lines: retention by size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    now = time.time()
    begun = _first_stamp(path) or now
    pending = bytearray()
    for line in data.splitlines(keepends=True):
        if policy.should_rotate(size + len(pending), len(line), begun, now):
            _write(path, pending)
            rotate(path)
            size, begun = 0, now
            pending.clear()
        pending += line
    _write(path, pending)


def _write(path: Path, data: bytes | bytearray) -> None:
    if data:
        with path.open("ab") as file:
            file.write(data)


ENGINE_LOG_FLOOR = 16 * 1000**2  # the engine's log is the buffer between two copies


def engine_log_options(policy: LogPolicy) -> dict[str, str]:
    """Options of the engine's `json-file` log driver that bound its own copy of a
    container's output: two files of the spec's max_size, but never less than what a chatty
    app writes between two copies (lines the engine rotated away before a copy are lost)."""
    return {"max-size": str(max(policy.max_size, ENGINE_LOG_FLOOR)), "max-file": "2"}
