"""What is on disk now: walk a tree (never following symlinks) and hash what the cache lacks."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from corral.audit.hashing import Hashed, hash_many
from corral.audit.statcache import StatCache

FileType = Literal["file", "dir", "symlink", "other"]


@dataclass(frozen=True)
class FileState:
    """One path as found. `sha256` is set for regular files (None when unreadable: `error`)."""

    type: FileType
    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    sha256: str | None = None
    target: str | None = None
    error: str | None = None


def file_type(mode: int) -> FileType:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def walk(root: str) -> Iterator[tuple[str, os.stat_result]]:
    """(path, lstat) of `root` and everything below it, depth first; symlinks not followed.

    A path that vanishes during the walk is skipped (it is then reported as removed)."""
    try:
        top = os.lstat(root)
    except FileNotFoundError:
        return
    yield root, top
    if not stat.S_ISDIR(top.st_mode):
        return
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield entry.path, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)


def scan(
    found: Iterable[tuple[str, os.stat_result]],
    cache: StatCache,
    *,
    full: bool = False,
    workers: int | None = None,
) -> dict[str, FileState]:
    """path → FileState for every (path, lstat) given; file contents from the cache when the
    stat matches (unless `full`), else hashed in parallel and cached."""
    stats = dict(found)
    digests: dict[str, str] = {}
    to_hash: list[str] = []
    for path, st in stats.items():
        if not stat.S_ISREG(st.st_mode):
            continue
        cached = None if full else cache.lookup(path, st)
        if cached is None:
            to_hash.append(path)
        else:
            digests[path] = cached
    errors: dict[str, str] = {}
    for path, result in hash_many(to_hash, workers=workers).items():
        if isinstance(result, OSError):
            errors[path] = result.strerror or str(result)
            cache.forget(path)
            continue
        digests[path] = result.sha256
        stats[path] = result.stat  # what was hashed, not what was walked
        _remember(cache, path, result)
    return {path: _state(path, st, digests, errors) for path, st in stats.items()}


def _remember(cache: StatCache, path: str, result: Hashed) -> None:
    if result.stable:
        cache.store(path, result.stat, result.sha256)
    else:
        cache.forget(path)


def _state(
    path: str, st: os.stat_result, digests: dict[str, str], errors: dict[str, str]
) -> FileState:
    kind = file_type(st.st_mode)
    target = None
    error = errors.get(path)
    if kind == "symlink":
        try:
            target = os.readlink(path)
        except OSError as exc:
            error = exc.strerror or str(exc)
    return FileState(
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        sha256=digests.get(path),
        target=target,
        error=error,
    )
