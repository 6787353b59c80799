"""Reading instance logs back: records of one instance within a time window, several
instances interleaved by time, and `--since`/`--until` values."""

from __future__ import annotations

import contextlib
import heapq
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from corral.logs.format import Record, parse
from corral.logs.retention import AGE_UNITS, files_of

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_OLDEST = datetime.min.replace(tzinfo=UTC)


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """`10m` (that long ago), or an RFC 3339 time such as `2026-11-24T10:00:00Z` (a time
    without a zone is UTC). Raises ValueError saying which forms are accepted."""
    now = datetime.now(UTC) if now is None else now
    text = text.strip()
    found = _DURATION.match(text)
    if found is not None:
        return now - timedelta(seconds=int(found.group(1)) * AGE_UNITS[found.group(2)])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30s, 10m, 2h, 7d) nor an RFC 3339 time "
            "(2026-11-24T10:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Entry:
    """A record with the instance it came from."""

    instance: str
    release: str
    record: Record

    @property
    def sort_key(self) -> datetime:
        return self.record.time or _OLDEST


def in_window(record: Record, since: datetime | None, until: datetime | None) -> bool:
    """A record inside [since, until). Unstamped (old-format) lines have no time: they are
    shown only when no window is asked for."""
    if since is None and until is None:
        return True
    if record.time is None:
        return False
    return (since is None or record.time >= since) and (until is None or record.time < until)


def records(path: Path) -> Iterator[Record]:
    """Every complete line of an instance's log (its rotated `.1` first), in order."""
    for file in files_of(path):
        with file.open("rb") as handle:
            for raw in handle:
                if raw.endswith(b"\n"):
                    yield parse(raw[:-1].decode(errors="replace"))


def interleave(streams: Iterable[Iterable[Entry]]) -> Iterator[Entry]:
    """Several instances' entries, each already in time order, merged by time (stable: equal
    times keep the instances' order)."""
    return heapq.merge(*streams, key=lambda e: e.sort_key)


class Follower:
    """New complete lines of one instance's log since the last poll, across rotations: when
    the live file was rotated, the rest of the old one (now `.1`) is read first."""

    def __init__(self, path: Path, position: tuple[int, int] = (0, 0)) -> None:
        self.path = path
        self._inode, self._offset = position

    @property
    def position(self) -> tuple[int, int]:
        """(inode, offset) after the last line read: a new Follower given it reads on from
        there (what a log cursor carries between polls)."""
        return self._inode, self._offset

    def skip_to_end(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        self._inode, self._offset = stat.st_ino, stat.st_size

    def poll(self) -> list[Record]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        found: list[Record] = []
        if stat.st_ino != self._inode and self._inode:
            rotated = self.path.with_name(self.path.name + ".1")
            with contextlib.suppress(FileNotFoundError):
                if rotated.stat().st_ino == self._inode:
                    found += self._read(rotated, self._offset)[0]
            self._offset = 0
        self._inode = stat.st_ino
        if stat.st_size < self._offset:  # truncated by hand: start over
            self._offset = 0
        more, self._offset = self._read(self.path, self._offset)
        return found + more

    @staticmethod
    def _read(path: Path, offset: int) -> tuple[list[Record], int]:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        lines = complete.decode(errors="replace").splitlines()
        return [parse(line) for line in lines], offset + len(complete)
