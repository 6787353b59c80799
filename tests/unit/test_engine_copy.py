"""Incremental copies of an engine's log: only new lines, rotated by size, never twice."""

from __future__ import annotations

import threading
from pathlib import Path

from corral.logs.engine_copy import append, copying, last_stamp, newer_than
from corral.logs.format import from_engine
from corral.logs.retention import LogPolicy, rotate

OUT = b"2026-11-24T10:00:00.000001500Z one\n2026-11-24T10:00:01.000002000Z three\n"
ERR = b"2026-11-24T10:00:00.500000000Z two\n"


def test_only_lines_stamped_after_the_files_last_line_are_appended(tmp_path: Path) -> None:
    log = tmp_path / "web-1.log"
    first = from_engine(OUT, ERR)
    assert last_stamp(log) is None
    append(log, newer_than(first, last_stamp(log)), LogPolicy())
    # the engine's `since` is inclusive: the next read repeats the last line, then a new one
    again = from_engine(OUT + b"2026-11-24T10:00:02.000000000Z four\n", ERR)
    append(log, newer_than(again, last_stamp(log)), LogPolicy())
    lines = log.read_text().splitlines()
    assert [line.split(" ", 2)[1:] for line in lines] == [
        ["stdout", "one"],
        ["stderr", "two"],
        ["stdout", "three"],
        ["stdout", "four"],
    ]
    assert lines[0].startswith("2026-11-24T10:00:00.000001Z")
    assert newer_than(again, last_stamp(log)) == b""


def test_the_log_is_rotated_by_size_and_the_rotated_file_still_says_what_was_copied(
    tmp_path: Path,
) -> None:
    log = tmp_path / "web-1.log"
    policy = LogPolicy(max_size=1024)
    stamp = "2026-11-24T10:00:{:02d}.000000000Z {}\n"
    for second in range(6):
        data = from_engine(stamp.format(second, "x" * 300).encode(), b"")
        append(log, newer_than(data, last_stamp(log)), policy)
    rotated = log.with_name(log.name + ".1")
    assert rotated.exists() and log.stat().st_size <= 1024
    rotate(log)  # as just after a rotation: no live file yet, the last line is in `.1`
    assert not log.exists()
    assert newer_than(from_engine(stamp.format(5, "x").encode(), b""), last_stamp(log)) == b""


def test_two_copiers_at_once_one_copies(tmp_path: Path) -> None:
    lock = tmp_path / "log.lock"
    inside = threading.Event()
    release = threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with copying(lock) as mine:
            seen.append(mine)
            inside.set()
            release.wait(5)

    worker = threading.Thread(target=first)
    worker.start()
    assert inside.wait(5)
    with copying(lock) as mine:
        seen.append(mine)
    release.set()
    worker.join(5)
    assert seen == [True, False]


def test_a_copy_larger_than_max_size_is_split_across_the_rotation(tmp_path: Path) -> None:
    """A copy may bring seconds of output at once: no file outgrows max_size by more than a
    line, and what does not fit in two files is the oldest (retention by size)."""
    log = tmp_path / "web-1.log"
    lines = b"".join(
        f"2026-11-24T10:00:00.{n:06d}Z stdout line-{n:04d} {'x' * 80}\n".encode()
        for n in range(100)
    )  # ~11 KB in one copy
    append(log, lines, LogPolicy(max_size=4096))
    rotated = log.with_name(log.name + ".1")
    assert log.stat().st_size <= 4096 and rotated.stat().st_size <= 4096
    kept = rotated.read_bytes() + log.read_bytes()
    assert lines.endswith(kept)  # the newest lines, in order, none twice
