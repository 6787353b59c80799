"""How much of an instance's output is kept, and removing what is past it.

Per instance log: the live file and one rotated `.1`. The collector rotates when the live file
would pass `max_size` or was begun more than `max_age` ago, so an instance keeps at most about
2 x max_size on disk. The agent removes the logs of instances that are gone (no instance dir:
forgotten) once they were last written more than `max_age` ago: a live instance's logs are
never removed, only rotated.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)
_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
ROTATED = ".1"


def parse_size(text: str | int) -> int:
    """`10MB`, `512KiB`, `1G`, `4096` → bytes. Raises ValueError naming the accepted forms."""
    if isinstance(text, int):
        return text
    found = _SIZE.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a size: write e.g. 10MB, 512KiB or 1G")
    number, unit = int(found.group(1)), (found.group(2) or "").upper()
    power = "BKMG".index(unit[:1]) if unit else 0
    base: int = 1024 if "I" in unit else 1000
    return int(number * base**power)


def parse_age(text: str | int) -> float:
    """`30s`, `10m`, `12h`, `7d`, `2w` → seconds."""
    if isinstance(text, int):
        return float(text)
    found = _AGE.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a duration: write e.g. 30s, 10m, 12h or 7d")
    return float(int(found.group(1)) * AGE_UNITS[found.group(2)])


@dataclass(frozen=True)
class LogPolicy:
    max_size: int = 10 * 1000**2
    max_age: float = 7 * 86400.0
    forward: str | None = None  # a syslog URL (corral.logs.forward)

    def __post_init__(self) -> None:
        if self.max_size < 1024 or self.max_age <= 0:
            raise ValueError("logs: max_size must be at least 1KB and max_age positive")

    @classmethod
    def from_settings(cls, settings: dict[str, str | int | None]) -> LogPolicy:
        """From the spec's `logs:` (sizes and ages as written there)."""
        default = cls()
        size, age = settings.get("max_size"), settings.get("max_age")
        forward = settings.get("forward")
        return cls(
            max_size=default.max_size if size is None else parse_size(size),
            max_age=default.max_age if age is None else parse_age(age),
            forward=None if forward is None else str(forward),
        )

    def should_rotate(self, size: int, adding: int, begun: float, now: float) -> bool:
        """Whether the live file (of `size` bytes, begun at `begun`) is rotated before
        `adding` more bytes are written. An empty file is never rotated."""
        if size == 0:
            return False
        return size + adding > self.max_size or now - begun > self.max_age


def rotate(path: Path) -> None:
    """The live file becomes `.1` (replacing the older one); the writer reopens `path`."""
    os.replace(path, path.with_name(path.name + ROTATED))


def files_of(path: Path) -> list[Path]:
    """The files holding an instance's log, oldest first."""
    return [p for p in (path.with_name(path.name + ROTATED), path) if p.is_file()]


def sweep(root: Path, live: Collection[str], policy: LogPolicy, now: float | None = None) -> int:
    """Remove the logs under `root` (`<service>/<id>.log[.1]`) of instances not in `live`
    last written more than max_age ago. Returns how many files were removed."""
    now = time.time() if now is None else now
    removed = 0
    if not root.is_dir():
        return 0
    for path in sorted(root.glob("*/*.log*")):
        instance_id = path.name.removesuffix(ROTATED).removesuffix(".log")
        if instance_id in live or instance_id == path.name:
            continue
        try:
            if now - path.stat().st_mtime > policy.max_age:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


class Sweeper:
    """A driver's sweep of the logs of long-gone instances, at most every `every` seconds
    (drivers call it from observe, which runs each agent tick)."""

    def __init__(self, root: Path, policy: LogPolicy | None = None, every: float = 600.0) -> None:
        self.root = root
        self.policy = policy or LogPolicy()
        self.every = every
        self._last = -math.inf

    def maybe(self, live: Collection[str]) -> int:
        """Sweep if due; `live` is every instance the driver still keeps a record of."""
        if time.monotonic() - self._last < self.every:
            return 0
        self._last = time.monotonic()
        return sweep(self.root, live, self.policy)
