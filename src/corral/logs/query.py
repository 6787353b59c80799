"""One query over a service's logs: what `corral logs` asks and the agent's API answers.

Both read through here, so a CLI on the instances' host and one elsewhere (through the owning
agent's `GET /v1/services/{service}/logs`) print the same records for the same filters. A read
returns a page of records (the rows `corral logs --json` prints) and a cursor,
`ID@INODE:OFFSET,…`: the position after the last complete line of each instance's live file,
so the next read with it returns only what was written since, across a rotation, and an
instance new since then from its start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.errors import UsageError
from corral.logs.format import Record, format_time
from corral.logs.read import Entry, Follower, in_window, interleave, parse_moment, records
from corral.logs.structured import FieldMatch, fields_of

if TYPE_CHECKING:
    from corral.drivers.protocol import Driver
    from corral.state.protocol import StateStore

DEFAULT_TAIL = 50  # lines shown without a time window or --tail
MAX_RECORDS = 20_000  # records in one page; past it the oldest are left out (and counted)
_CURSOR = re.compile(r"^([A-Za-z0-9._-]{1,128})@(\d{1,20}):(\d{1,15})$")


@dataclass(frozen=True)
class Source:
    """Where one instance's log is, and the release it ran."""

    instance: str
    release: str  # r3
    path: Path


def sources(
    store: StateStore,
    driver: Driver,
    service: str,
    *,
    instance: str | None = None,
    release: str | None = None,
) -> list[Source]:
    """The logs on this host of a service's instances, also those already replaced."""
    found = []
    for record in store.list_instances(service, include_gone=True):
        label = f"r{record.release}"
        if instance and record.id != instance:
            continue
        if release and release not in (label, str(record.release)):
            continue
        path = driver.log_path(record.id)
        if path is not None and (path.exists() or path.with_name(path.name + ".1").exists()):
            found.append(Source(record.id, label, path))
    return found


@dataclass(frozen=True)
class LogQuery:
    service: str
    instance: str | None = None
    release: str | None = None
    grep: re.Pattern[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    tail: int | None = None  # None: DEFAULT_TAIL, or all within a time window; 0: all
    fields: tuple[FieldMatch, ...] = field(default=())

    @classmethod
    def parse(
        cls,
        service: str,
        *,
        instance: str | None = None,
        release: str | None = None,
        grep: str | None = None,
        since: str | None = None,
        until: str | None = None,
        tail: int | None = None,
        fields: list[str] | tuple[str, ...] = (),
    ) -> LogQuery:
        """The query the user's options (or an API request's parameters) ask for; a bad one
        is a UsageError (exit 2) saying which option and what is accepted."""
        try:
            start = parse_moment(since) if since else None
            end = parse_moment(until) if until else None
        except ValueError as exc:
            raise UsageError(
                str(exc), hint="e.g. --since 10m or --since 2026-11-24T10:00:00Z"
            ) from exc
        try:
            pattern = re.compile(grep) if grep else None
        except re.error as exc:
            raise UsageError(f"--grep {grep!r} is not a regular expression: {exc}") from exc
        try:
            matches = tuple(FieldMatch.parse(f) for f in fields)
        except ValueError as exc:
            raise UsageError(f"--field {exc}", hint="e.g. --field level=error") from exc
        if tail is not None and tail < 0:
            raise UsageError(f"--tail must be 0 or more, not {tail}")
        return cls(service, instance, release, pattern, start, end, tail, matches)

    def params(self) -> dict[str, Any]:
        """The query as the API's parameters (times absolute, so every poll means the same)."""
        given: dict[str, Any] = {
            "instance": self.instance,
            "release": self.release,
            "grep": self.grep.pattern if self.grep else None,
            "since": format_time(self.since) if self.since else None,
            "until": format_time(self.until) if self.until else None,
            "tail": self.tail,
            "field": [str(f) for f in self.fields] or None,
        }
        return {k: v for k, v in given.items() if v is not None}

    @property
    def last(self) -> int:
        """How many of the matching records to keep, newest last (0: all)."""
        if self.tail is not None:
            return self.tail
        return 0 if self.since or self.until else DEFAULT_TAIL

    def keeps(self, record: Record, fields: dict[str, Any] | None) -> bool:
        if not in_window(record, self.since, self.until):
            return False
        if self.grep is not None and not self.grep.search(record.text):
            return False
        return all(f.matches(fields) for f in self.fields)


def row(service: str, entry: Entry, fields: dict[str, Any] | None) -> dict[str, Any]:
    """One record as `corral logs --json` prints it; `fields` is the object a JSON line holds
    (null for any other line)."""
    rec = entry.record
    return {
        "service": service,
        "instance": entry.instance,
        "release": entry.release,
        "time": rec.stamp(),
        "stream": rec.stream,
        "line": rec.text,
        "fields": fields,
    }


@dataclass(frozen=True)
class Page:
    records: list[dict[str, Any]]
    cursor: str
    omitted: int = 0  # matching records left out past MAX_RECORDS (the oldest)


def read(
    found: list[Source], query: LogQuery, cursor: str | None = None, *, limit: int = MAX_RECORDS
) -> Page:
    """Without a cursor: the matching records (the last `query.last`), interleaved by time.
    With one: only what was written since it (every match: a follower wants them all)."""
    known = parse_cursor(cursor) if cursor is not None else None
    positions: dict[str, tuple[int, int]] = {}
    streams: list[list[Entry]] = []
    for source in found:
        if known is not None and source.instance in known:
            follower = Follower(source.path, known[source.instance])
            got = follower.poll()
        else:  # the rotated file whole, then the live one through a follower: no gap
            follower = Follower(source.path)
            rotated = source.path.with_name(source.path.name + ".1")
            got = list(records(rotated)) if rotated.is_file() else []
            got += follower.poll()
        positions[source.instance] = follower.position
        streams.append([Entry(source.instance, source.release, r) for r in got])
    if known is not None:  # instances gone from the sources keep their place
        positions = {**known, **positions}
    rows = []
    for entry in interleave(streams):
        fields = fields_of(entry.record.text)
        if query.keeps(entry.record, fields):
            rows.append(row(query.service, entry, fields))
    if known is None and query.last:
        rows = rows[-query.last :]
    omitted = max(0, len(rows) - limit)
    return Page(rows[omitted:], format_cursor(positions), omitted)


def local_page(
    store: StateStore, driver: Driver, query: LogQuery, cursor: str | None = None
) -> Page:
    """A page read from this host's files (the CLI beside the instances, and the agent's API)."""
    found = sources(store, driver, query.service, instance=query.instance, release=query.release)
    return read(found, query, cursor)


def format_cursor(positions: dict[str, tuple[int, int]]) -> str:
    return ",".join(f"{i}@{inode}:{offset}" for i, (inode, offset) in sorted(positions.items()))


def parse_cursor(cursor: str) -> dict[str, tuple[int, int]]:
    positions: dict[str, tuple[int, int]] = {}
    for part in filter(None, cursor.split(",")):
        found = _CURSOR.match(part)
        if found is None:
            raise UsageError(
                f"log cursor part {part[:40]!r} is not ID@INODE:OFFSET",
                hint="Pass back the `cursor` of the previous answer unchanged, or none.",
            )
        positions[found.group(1)] = (int(found.group(2)), int(found.group(3)))
    return positions
