"""One on-disk line format for every driver: `TIMESTAMP STREAM TEXT`.

    2026-11-24T10:00:00.123456Z stdout listening on :8000

The timestamp is RFC 3339 in UTC with exactly six fractional digits, so stamps sort as
strings; it is the time the collector (or the engine) received the line, never the app's own
clock. Files written before stamping existed hold bare lines: they parse as records with no
time and no stream, and stay readable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

STREAMS = ("stdout", "stderr")
_STAMPED = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z (stdout|stderr) (.*)$", re.DOTALL
)


@dataclass(frozen=True)
class Record:
    """One line of an instance's output. `time` is None for a line of an old, unstamped file."""

    time: datetime | None
    stream: str | None
    text: str

    def stamp(self) -> str | None:
        return None if self.time is None else format_time(self.time)


def format_time(moment: datetime) -> str:
    """RFC 3339, UTC, microseconds: `2026-11-24T10:00:00.000000Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stamp(text: bytes, stream: str, at: float) -> bytes:
    """The stored form of one line (without its newline) received at epoch seconds `at`."""
    moment = datetime.fromtimestamp(at, UTC)
    return f"{format_time(moment)} {stream} ".encode() + text + b"\n"


def parse(line: str) -> Record:
    """A stored line (without its newline); a bare line (old format) keeps its whole text."""
    found = _STAMPED.match(line)
    if found is None:
        return Record(None, None, line)
    seconds, fraction, stream, text = found.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    moment = datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S").replace(microsecond=micros, tzinfo=UTC)
    return Record(moment, stream, text)


def from_engine(stdout: bytes, stderr: bytes) -> bytes:
    """An engine's logs, read once per stream with `timestamps=True` (Docker, Swarm: each line
    `2026-11-24T10:00:00.123456789Z text`), as stored lines merged by time. A line without the
    engine's stamp (it cannot happen with timestamps=True) keeps its text, unstamped."""
    records: list[tuple[str, int, bytes]] = []
    for order, (stream, data) in enumerate((("stdout", stdout), ("stderr", stderr))):
        for raw in data.splitlines():
            head, _, text = raw.partition(b" ")
            record = parse(f"{head.decode(errors='replace')} {stream} x")
            if record.time is None:
                records.append(("", order, raw + b"\n"))
                continue
            when = format_time(record.time)
            records.append((when, order, f"{when} {stream} ".encode() + text + b"\n"))
    records.sort(key=lambda r: (r[0], r[1]))
    return b"".join(r[2] for r in records)
