"""Host drift: a baseline of watched paths, then what was added, removed or changed since,
and which of those changes happened after the last boot.

The baseline lives under `$CORRAL_HOME/audit/host-baseline.json` with a MAC under the home's
audit key: a baseline edited to hide a change is refused, not believed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.audit.keys import audit_dir, home_key, mac
from corral.audit.report import HostChange, HostReport, short
from corral.audit.statcache import StatCache
from corral.audit.tree import FileState, scan, walk
from corral.errors import DriftFound, UsageError

BASELINE_VERSION = 1


def boot_time(proc_stat: Path = Path("/proc/stat")) -> float:
    """When this host booted (seconds since the epoch): the `btime` line of /proc/stat."""
    for line in proc_stat.read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise UsageError(f"{proc_stat} has no btime line", hint="run on Linux with /proc mounted")


@dataclass(frozen=True)
class Baseline:
    created_at: float
    paths: tuple[str, ...]
    files: dict[str, dict[str, Any]]  # path → type, mode, uid, gid, size, mtime_ns, sha256, target


class HostAuditor:
    """Records and checks the host baseline of one `$CORRAL_HOME`."""

    def __init__(self, home: Path, *, workers: int | None = None) -> None:
        self.home = home
        self.workers = workers
        self._key = home_key(home)
        self.baseline_path = audit_dir(home) / "host-baseline.json"
        self.cache = StatCache(audit_dir(home) / "statcache-host.json", self._key)

    def init(self, paths: Sequence[str]) -> Baseline:
        """Record the baseline of `paths` (files or directories, walked without following
        symlinks), replacing any earlier one."""
        if not paths:
            raise UsageError(
                "no paths to watch", hint="name them: corral audit host --init --paths /etc"
            )
        absolute = tuple(sorted({os.path.abspath(p) for p in paths}))
        missing = [p for p in absolute if not os.path.lexists(p)]
        if missing:
            raise UsageError(
                f"cannot watch what does not exist: {', '.join(missing)}",
                hint="check the --paths given",
            )
        found = self._scan(absolute, full=True)
        baseline = Baseline(time.time(), absolute, {p: _record(s) for p, s in found.items()})
        self._save(baseline)
        return baseline

    def check(self, *, full: bool = False, booted: float | None = None) -> HostReport:
        """What differs from the baseline now. `booted` defaults to /proc/stat's btime."""
        baseline = self.load()
        booted = boot_time() if booted is None else booted
        found = self._scan(baseline.paths, full=full)
        now = {p: _record(s) for p, s in found.items()}
        changes = compare_host(baseline.files, now, found, booted=booted)
        return HostReport(
            baseline_at=baseline.created_at,
            boot_time=booted,
            paths=baseline.paths,
            files=len(now),
            changes=tuple(changes),
        )

    def load(self) -> Baseline:
        try:
            doc = json.loads(self.baseline_path.read_text())
        except FileNotFoundError:
            raise UsageError(
                f"no host baseline in {self.baseline_path}",
                hint="record one first: corral audit host --init --paths /etc/…",
            ) from None
        except (OSError, ValueError) as exc:
            raise DriftFound(
                f"the host baseline {self.baseline_path} cannot be read: {exc}",
                hint="if you did not change it, treat the host as tampered; "
                "else record a new baseline with --init",
            ) from exc
        body = doc.get("baseline", "") if isinstance(doc, dict) else ""
        if not isinstance(body, str) or doc.get("mac") != mac(self._key, body.encode()):
            raise DriftFound(
                f"the host baseline {self.baseline_path} was changed since corral wrote it",
                hint="if you did not change it, treat the host as tampered; "
                "else record a new baseline with --init",
            )
        data = json.loads(body)
        return Baseline(float(data["created_at"]), tuple(data["paths"]), dict(data["files"]))

    def _scan(self, paths: Iterable[str], *, full: bool) -> dict[str, FileState]:
        walked = [item for path in paths for item in walk(path)]
        found = scan(walked, self.cache, full=full, workers=self.workers)
        self.cache.save()
        return found

    def _save(self, baseline: Baseline) -> None:
        body = json.dumps(
            {
                "v": BASELINE_VERSION,
                "created_at": baseline.created_at,
                "paths": list(baseline.paths),
                "files": baseline.files,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        doc = {"mac": mac(self._key, body.encode()), "baseline": body}
        self.baseline_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.baseline_path.with_name(f".{self.baseline_path.name}.tmp")
        tmp.write_text(json.dumps(doc))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.baseline_path)


def _record(state: FileState) -> dict[str, Any]:
    return {
        "type": state.type,
        "mode": state.mode,
        "uid": state.uid,
        "gid": state.gid,
        "size": state.size,
        "mtime_ns": state.mtime_ns,
        "sha256": state.sha256,
        "target": state.target,
    }


def compare_host(
    before: dict[str, dict[str, Any]],
    after: dict[str, dict[str, Any]],
    states: dict[str, FileState],
    *,
    booted: float,
) -> list[HostChange]:
    """Pure: the changes between two sets of records, sorted by path. A change is `after_boot`
    when the file's ctime (moved by any write, chmod or chown) is later than `booted`."""
    changes: list[HostChange] = []
    boot_ns = int(booted * 1e9)
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if new is None:
            changes.append(HostChange(path, "removed", detail=f"({old and old['type']})"))
            continue
        late = states[path].ctime_ns > boot_ns
        if old is None:
            changes.append(HostChange(path, "added", detail=f"({new['type']})", after_boot=late))
            continue
        what, details = _differences(old, new)
        if what:
            changes.append(
                HostChange(path, "changed", tuple(what), "; ".join(details), after_boot=late)
            )
    return changes


def _differences(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    what: list[str] = []
    details: list[str] = []
    if old["type"] != new["type"]:
        return ["type"], [f"type {old['type']} → {new['type']}"]
    if old["sha256"] != new["sha256"]:
        what.append("content")
        details.append(f"sha256 {short(old['sha256'])} → {short(new['sha256'])}")
    if old["target"] != new["target"]:
        what.append("target")
        details.append(f"→ {old['target']} became → {new['target']}")
    if old["mode"] != new["mode"]:
        what.append("mode")
        details.append(f"mode {old['mode']:04o} → {new['mode']:04o}")
    if (old["uid"], old["gid"]) != (new["uid"], new["gid"]):
        what.append("owner")
        details.append(f"owner {old['uid']}:{old['gid']} → {new['uid']}:{new['gid']}")
    return what, details
