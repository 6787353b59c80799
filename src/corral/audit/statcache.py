"""The stat cache: a file whose (device, inode, size, mtime, ctime) are unchanged since it was
hashed is not hashed again.

ctime cannot be set from user space: rewriting a file and restoring its mtime (`touch -d`)
still moves ctime, and replacing it by rename changes the inode. So a hit means the content is
the one hashed — short of a changed clock or a raw write to the block device, which `--full`
(hash everything) covers.

A file whose ctime is very recent is not cached: a write in the same clock tick as our read
could leave every stat field equal ("racy" entries, as git calls them).

The cache is saved with a MAC under the home's audit key, so a cache edited by hand is
ignored (and everything hashed again) rather than trusted.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from corral.audit.keys import mac

CACHE_VERSION = 1
_RACY_NS = 100_000_000  # far more than a kernel clock tick (1 to 10 ms)

StatKey = tuple[int, int, int, int, int]


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class StatCache:
    """path → (stat key, sha256). Not thread-safe: one owner (a CLI run, or the agent)."""

    def __init__(self, path: Path | None, key: bytes) -> None:
        self.path = path
        self._key = key
        self._entries: dict[str, tuple[StatKey, str]] = {}
        self.dirty = False
        self.hits = 0
        self.misses = 0
        if path is not None:
            self._load(path)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, path: str, st: os.stat_result) -> str | None:
        """The cached sha256 when `st` matches what was hashed, else None."""
        found = self._entries.get(path)
        if found is not None and found[0] == stat_key(st):
            self.hits += 1
            return found[1]
        self.misses += 1
        return None

    def store(self, path: str, st: os.stat_result, sha256: str) -> None:
        if time.time_ns() - st.st_ctime_ns < _RACY_NS:
            self._entries.pop(path, None)  # racy: hash it again next time
            return
        entry = (stat_key(st), sha256)
        if self._entries.get(path) != entry:
            self._entries[path] = entry
            self.dirty = True

    def forget(self, path: str) -> None:
        if self._entries.pop(path, None) is not None:
            self.dirty = True

    def save(self) -> None:
        """Write atomically when something changed (a reader sees the old or the new file)."""
        if self.path is None or not self.dirty:
            return
        entries = {p: [*k, sha] for p, (k, sha) in self._entries.items()}
        body = json.dumps(entries, separators=(",", ":"), sort_keys=True)
        doc = {"v": CACHE_VERSION, "mac": mac(self._key, body.encode()), "entries": body}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self.dirty = False

    def _load(self, path: Path) -> None:
        try:
            doc: Any = json.loads(path.read_bytes())
            body = doc["entries"]
            if doc.get("v") != CACHE_VERSION or doc.get("mac") != mac(self._key, body.encode()):
                return  # not ours, or edited: start empty (everything is hashed)
            raw = json.loads(body)
            self._entries = {p: ((e[0], e[1], e[2], e[3], e[4]), str(e[5])) for p, e in raw.items()}
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
            self._entries = {}
