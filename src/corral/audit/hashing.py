"""Content hashing for the auditor: streaming, and parallel across files.

hashlib releases the GIL while it digests a buffer larger than 2 KiB, and so does `os.read`,
so a few threads keep every core busy on SHA-256 with no process pool and no pickling.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

_CHUNK = 1 << 20  # bytes read per call: large enough that the GIL is rarely held
_BATCH = 64  # files per task: per-future overhead is ~10 µs, a small file's hash ~20 µs


@dataclass(frozen=True)
class Hashed:
    """The digest of one file and its stat, taken on the open file before and after reading.

    `stable` is False when the file changed while it was read: its digest must not be cached."""

    sha256: str
    stat: os.stat_result
    stable: bool


def hash_file(path: str) -> Hashed:
    """SHA-256 of a regular file's content, read in chunks; never follows a symlink.

    Raises OSError when the file cannot be opened or read (or is a symlink now)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        before = os.fstat(fd)
        digest = hashlib.sha256()
        if before.st_size <= _CHUNK:  # most files: one read, one update
            data = os.read(fd, _CHUNK + 1)
            digest.update(data)
            if len(data) > _CHUNK:
                _stream(fd, digest)
        else:
            _stream(fd, digest)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    stable = (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
    )
    return Hashed(digest.hexdigest(), after, stable)


def _stream(fd: int, digest: hashlib._Hash) -> None:
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    while True:
        n = os.readv(fd, [buffer])
        if n == 0:
            return
        digest.update(view[:n])


def default_workers() -> int:
    return max(2, min(8, os.cpu_count() or 2))


def hash_many(paths: Sequence[str], *, workers: int | None = None) -> dict[str, Hashed | OSError]:
    """Every path's `Hashed`, or the OSError that prevented it (the caller reports it)."""
    workers = workers or default_workers()
    if len(paths) <= _BATCH or workers == 1:
        return _hash_batch(paths)
    batches = [paths[i : i + _BATCH] for i in range(0, len(paths), _BATCH)]
    results: dict[str, Hashed | OSError] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="corral-hash") as pool:
        for done in pool.map(_hash_batch, batches):
            results.update(done)
    return results


def _hash_batch(paths: Sequence[str]) -> dict[str, Hashed | OSError]:
    results: dict[str, Hashed | OSError] = {}
    for path in paths:
        try:
            results[path] = hash_file(path)
        except OSError as exc:
            results[path] = exc
    return results
