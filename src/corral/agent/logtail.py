"""A bounded tail of a service's instance logs, and what was written since (polling).

Reads from the end of each log file (never the whole file) and only complete lines. The
cursor is `ID@OFFSET,…`: the byte offset after the last line returned per instance, so the
next poll returns only what was written since; an instance new since the last poll gets
its own tail. Lines are stored stamped (corral.logs.format); each comes back with its time and
stream, and `since` keeps only those written at or after a time (within the bounded tail).
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from corral.api_schema import LogLine, LogTail
from corral.drivers.protocol import Driver
from corral.errors import UsageError
from corral.logs.format import parse
from corral.logs.read import in_window, parse_moment
from corral.logs.structured import fields_of
from corral.state.protocol import StateStore

MAX_TAIL = 1000  # lines per instance per request
MAX_BYTES = 256 * 1024  # read per instance per request
GONE_KEPT = 10  # replaced/stopped instances shown beside the live ones, newest first
_CURSOR = re.compile(r"^([A-Za-z0-9._-]{1,128})@(\d{1,15})$")


def parse_cursor(cursor: str | None) -> dict[str, int]:
    offsets: dict[str, int] = {}
    for part in filter(None, (cursor or "").split(",")):
        found = _CURSOR.match(part)
        if found is None:
            raise UsageError(
                f"log cursor part {part[:40]!r} is not ID@OFFSET",
                hint="Pass back the `cursor` of the previous answer unchanged, or none.",
            )
        offsets[found.group(1)] = int(found.group(2))
    return offsets


def tail(path: Path, lines: int) -> tuple[list[str], int]:
    """The last `lines` complete lines and the offset just after them."""
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        start = max(0, end - MAX_BYTES)
        f.seek(start)
        data = f.read(end - start)
    complete = data[: data.rfind(b"\n") + 1]
    if start > 0:  # the first line read is cut: drop it
        cut = complete.find(b"\n") + 1
        complete = complete[cut:]
    offset = end - (len(data) - (data.rfind(b"\n") + 1))
    text = complete.decode(errors="replace").splitlines()
    return text[-lines:] if lines else [], offset


def since(path: Path, offset: int) -> tuple[list[str], int]:
    """Complete lines written after `offset` (at most MAX_BYTES), and the new offset."""
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        if offset > end:  # the file was replaced or truncated: start over
            offset = 0
        f.seek(offset)
        data = f.read(min(MAX_BYTES, end - offset))
    complete = data[: data.rfind(b"\n") + 1]
    return complete.decode(errors="replace").splitlines(), offset + len(complete)


def service_logs(
    store: StateStore,
    driver: Driver,
    service: str,
    *,
    instance: str | None = None,
    lines: int = 100,
    cursor: str | None = None,
    from_time: str | None = None,
) -> LogTail:
    if not 0 <= lines <= MAX_TAIL:
        raise UsageError(f"tail must be 0..{MAX_TAIL} lines, not {lines}")
    start = _moment(from_time)
    offsets = parse_cursor(cursor)
    records = store.list_instances(service, include_gone=True)
    if instance is not None:
        records = [r for r in records if r.id == instance]
        if not records:
            raise UsageError(
                f"{service} has no instance {instance!r}",
                hint="`corral status` lists the instances of each service.",
            )
    else:
        live = {r.id for r in store.list_instances(service)}
        gone = sorted((r for r in records if r.id not in live), key=lambda r: -r.created_at)
        keep = live | {r.id for r in gone[:GONE_KEPT]}
        records = [r for r in records if r.id in keep]
    found: list[LogLine] = []
    positions: dict[str, int] = {}
    for record in records:
        path = driver.log_path(record.id)
        if path is None or not Path(path).is_file():
            continue
        if record.id in offsets:
            text, positions[record.id] = since(Path(path), offsets[record.id])
        elif start is not None:
            text, positions[record.id] = tail(Path(path), MAX_TAIL)
        else:
            text, positions[record.id] = tail(Path(path), lines)
        label = f"r{record.release}"
        parsed = [r for r in map(parse, text) if in_window(r, start, None)]
        if start is not None and record.id not in offsets:
            parsed = parsed[-lines:] if lines else []
        found.extend(
            LogLine(
                instance=record.id,
                release=label,
                line=r.text,
                time=r.stamp(),
                stream=r.stream,
                fields=fields_of(r.text),
            )
            for r in parsed
        )
    return LogTail(
        service=service,
        lines=found,
        cursor=",".join(f"{i}@{o}" for i, o in sorted(positions.items())),
    )


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise UsageError(f"since: {exc}", hint="e.g. since=10m") from exc
