"""The stat cache: unchanged files are not hashed again, and a changed one is never missed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from corral.audit.keys import home_key
from corral.audit.statcache import StatCache
from corral.audit.tree import FileState, scan, walk


def _settle() -> None:
    """Let ctimes age past the racy window, so the files can be cached."""
    time.sleep(0.15)


def _scan(root: Path, cache: StatCache, *, full: bool = False) -> dict[str, FileState]:
    return scan(walk(str(root)), cache, full=full)


def _tree(tmp_path: Path, n: int = 5) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    for i in range(n):
        (root / f"f{i}").write_bytes(f"content {i}".encode() * 100)
    _settle()
    return root


def test_unchanged_files_are_hits_and_a_changed_one_a_miss(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    cache = StatCache(None, b"k")
    first = _scan(root, cache)
    assert (cache.hits, cache.misses) == (0, 5)
    (root / "f2").write_bytes(b"other")
    second = _scan(root, cache)
    assert (cache.hits, cache.misses) == (4, 6)
    assert second[str(root / "f2")].sha256 != first[str(root / "f2")].sha256


def test_same_size_rewrite_with_mtime_restored_is_still_caught(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    cache = StatCache(None, b"k")
    path = root / "f1"
    before = _scan(root, cache)[str(path)]
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored: only ctime moved
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    after = _scan(root, cache)[str(path)]
    assert after.sha256 != before.sha256


def test_full_ignores_a_cache_that_lies(tmp_path: Path) -> None:
    root = _tree(tmp_path, n=1)
    cache = StatCache(None, b"k")
    path = str(root / "f0")
    real = _scan(root, cache)[path].sha256
    cache.store(path, os.lstat(path), "0" * 64)  # as if the cache were stale
    assert _scan(root, cache)[path].sha256 == "0" * 64
    assert _scan(root, cache, full=True)[path].sha256 == real


def test_a_file_changed_just_now_is_not_cached(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    (root / "fresh").write_bytes(b"x")
    cache = StatCache(None, b"k")
    _scan(root, cache)
    _scan(root, cache)
    assert cache.hits == 0  # racy: the same clock tick could hide a second write


def test_the_cache_survives_a_restart_and_an_edited_cache_is_ignored(tmp_path: Path) -> None:
    root = _tree(tmp_path, n=3)
    key = home_key(tmp_path / "home")
    cache_file = tmp_path / "home" / "cache.json"
    cache = StatCache(cache_file, key)
    _scan(root, cache)
    cache.save()
    reloaded = StatCache(cache_file, key)
    _scan(root, reloaded)
    assert (reloaded.hits, reloaded.misses) == (3, 0)
    cache_file.write_text(cache_file.read_text().replace("f0", "g0"))
    edited = StatCache(cache_file, key)
    assert len(edited) == 0
    assert len(StatCache(cache_file, b"another home's key")) == 0
