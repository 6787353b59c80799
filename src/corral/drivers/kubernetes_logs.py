"""Copies of pods' logs in corral's log files, so `corral logs` shows a kubernetes instance
like any other.

A pod's log lives with its kubelet; corral reads it through the API with `timestamps=true`
and `sinceTime` (the kubelet's stamp of each line, never corral's clock) and appends only the
lines it has not copied yet, as `TIMESTAMP stdout TEXT` (corral.logs.format: the API merges
stdout and stderr into one stream, so every line is filed as stdout). A running pod is read
at most every `every` seconds (observe runs each agent tick); a stop or a failed start reads
at once. The file is rotated by size like the collector's (one `.1`).

What was copied is what the file holds: each copy starts after the stamp of its last line
(lines are compared to the microsecond, the stored precision, so a line the kubelet stamped in
the same microsecond as the last one copied is not copied), under a lock file in the
instance's directory, so the agent and a CLI observing at once never copy a line twice.
"""

from __future__ import annotations

import calendar
import math
import time
from pathlib import Path

from corral.drivers.kubernetes_api import Cluster
from corral.logs import engine_copy
from corral.logs.retention import LogPolicy


def nanos(stamp: str) -> int | None:
    """An RFC 3339 UTC stamp (any fraction, `Z`) as nanoseconds since the epoch."""
    try:
        seconds, _, fraction = stamp.removesuffix("Z").partition(".")
        whole = calendar.timegm(time.strptime(seconds, "%Y-%m-%dT%H:%M:%S"))
        return whole * 10**9 + int((fraction or "0").ljust(9, "0")[:9])
    except ValueError:
        return None


def stored_lines(text: str, after: int | None) -> tuple[bytes, int | None, str | None]:
    """The kubelet's lines stamped in a later microsecond than `after` (ns), in the stored
    form, and the last one's stamp (ns and as the kubelet wrote it)."""
    out: list[bytes] = []
    last, last_raw = after, None
    for line in text.split("\n"):  # only newlines end a line (a \r is the app's text)
        if not line:
            continue
        raw, _, body = line.partition(" ")
        at = nanos(raw)
        if at is None:  # cannot happen with timestamps=true; kept as it came
            out.append(line.encode() + b"\n")
            continue
        if after is not None and at // 1000 <= after // 1000:
            continue  # sinceTime is inclusive (and may be cut to the second): copied before
        moment = time.gmtime(at // 10**9)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", moment) + f".{at % 10**9 // 1000:06d}Z"
        out.append(f"{stamp} stdout {body}\n".encode())
        last, last_raw = at, raw
    return b"".join(out), last, last_raw


class PodLogs:
    """Incremental copies of pods' logs, one file per instance."""

    def __init__(self, cluster: Cluster, every: float = 2.0, policy: LogPolicy | None = None):
        self._cluster = cluster
        self.every = every
        self.policy = policy or LogPolicy()
        self._read_at: dict[str, float] = {}  # instance id → when its pod's log was last read
        self._copied: dict[str, tuple[int, str]] = {}  # instance id → last line's stamp

    async def sync(
        self, instance_id: str, pod: str, path: Path, lock: Path, *, now: bool = False
    ) -> None:
        """Append what `pod` logged since the last copy to `path` (at most every `every` s
        unless `now`), holding `lock`. A pod or log that is gone leaves the file as it is."""
        moment = time.monotonic()
        if not now and moment - self._read_at.get(instance_id, -math.inf) < self.every:
            return
        self._read_at[instance_id] = moment
        with engine_copy.copying(lock) as mine:
            if not mine:
                return
            after = engine_copy.last_stamp(
                path
            )  # the file says what was copied, by whichever process
            known = self._copied.get(instance_id)
            if known is not None and after is not None and known[0] // 1000 == after // 1000:
                since: str | None = known[1]  # the kubelet's own stamp, to the nanosecond
            else:
                since = None if after is None else _since(after)
            text = await self._cluster.log(pod, since_time=since)
            data, last, last_raw = stored_lines(text, after)
            if not data:
                return
            engine_copy.append(path, data, self.policy)
            if last is not None and last_raw is not None:
                self._copied[instance_id] = (last, last_raw)

    def forget(self, instance_id: str) -> None:
        self._read_at.pop(instance_id, None)
        self._copied.pop(instance_id, None)


def _since(at: int) -> str:
    """`at` (ns) as the RFC 3339 stamp sinceTime takes."""
    moment = time.gmtime(at // 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", moment) + f".{at % 10**9:09d}Z"
