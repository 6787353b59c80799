"""What the auditor reports. Plain frozen dataclasses with a stable JSON shape; no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


def short(sha256: str | None) -> str:
    return f"{sha256[:12]}…" if sha256 else "(unreadable)"


@dataclass(frozen=True)
class Finding:
    """One difference. `kind`: tampered, added, removed, mode, owner, type, target (files);
    command, env, image (config). `path` is the file ("/app/x") or the setting ("env.NAME").
    `detail` never holds a secret value: env values appear only as keyed hashes (law 5)."""

    kind: str
    path: str
    detail: str

    def render(self) -> str:
        return f"{self.kind}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "detail": self.detail}


class AuditStatus(enum.StrEnum):
    CLEAN = "clean"
    DRIFT = "drift"  # at least one finding
    NOT_AUDITED = "not audited"  # some part could not be read; never reported as clean
    SKIPPED = "skipped"  # pending or stopping: in a roll-out's hands, not audited now


@dataclass(frozen=True)
class InstanceFinding:
    """The audit of one instance: its files against the image manifest, its runtime config
    against its release.

    `files` are findings in the image's unpacked root, which every local instance of that image
    binds read-only: they hold for all of `shared_with` too (replace them all, after the
    root is made anew from the verified blobs). `config` findings are this instance's own.
    `not_audited` says why a part could not be audited (then the status is never clean)."""

    instance_id: str
    service: str
    release: int
    image_digest: str
    files: tuple[Finding, ...] = ()
    config: tuple[Finding, ...] = ()
    not_audited: tuple[str, ...] = ()
    shared_with: tuple[str, ...] = ()
    rootfs: str | None = None
    skipped: str | None = None
    # findings in a container engine's image layers (Docker): shared by every container of
    # the image, and inherited by a fresh one, since the engine cannot load a clean copy
    # while containers use them (see docs/architecture.md, "the auditor on Docker")
    layer_files: tuple[Finding, ...] = ()
    layers: str | None = None  # where those layers are, for the report
    # where it was checked (Swarm): the node its task runs on and that node's engine address
    node: str | None = None
    engine: str | None = None
    # parts corral cannot check there, said on its line; the rest may still be clean
    unchecked: tuple[str, ...] = ()

    @property
    def tampered(self) -> bool:
        return bool(self.files or self.layer_files)

    @property
    def drifted(self) -> bool:
        return bool(self.config)

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.layer_files + self.files + self.config

    @property
    def status(self) -> AuditStatus:
        if self.findings:
            return AuditStatus.DRIFT
        if self.skipped:
            return AuditStatus.SKIPPED
        if self.not_audited:
            return AuditStatus.NOT_AUDITED
        return AuditStatus.CLEAN

    def evidence(self, limit: int = 5) -> str:
        """One line for an event: the first findings, e.g. `tampered: /app/x sha256 ab… ≠ …`."""
        lines = [f.render() for f in self.findings[:limit]]
        more = len(self.findings) - limit
        return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.instance_id,
            "service": self.service,
            "release": f"r{self.release}",
            "image": self.image_digest,
            "status": str(self.status),
            "files": [f.to_json() for f in self.files],
            "config": [f.to_json() for f in self.config],
            "not_audited": list(self.not_audited),
            "skipped": self.skipped,
            "shared_with": list(self.shared_with),
            "rootfs": self.rootfs,
            "layer_files": [f.to_json() for f in self.layer_files],
            "layers": self.layers,
            "node": self.node,
            "engine": self.engine,
            "unchecked": list(self.unchecked),
        }


@dataclass(frozen=True)
class HostChange:
    """One watched path that differs from the baseline. `what`: content, mode, owner, type,
    target (for `changed`). `after_boot`: its ctime is later than the last boot."""

    path: str
    kind: str  # added | removed | changed
    what: tuple[str, ...] = ()
    detail: str = ""
    after_boot: bool = False

    def render(self) -> str:
        when = " (after boot)" if self.after_boot else ""
        text = f"{self.kind}: {self.path}"
        if self.detail:
            text += f" {self.detail}"
        return text + when

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "what": list(self.what),
            "detail": self.detail,
            "after_boot": self.after_boot,
        }


@dataclass(frozen=True)
class HostReport:
    baseline_at: float
    boot_time: float
    paths: tuple[str, ...]
    files: int  # watched files and dirs now
    changes: tuple[HostChange, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "drift" if self.changes else "clean",
            "baseline_at": self.baseline_at,
            "boot_time": self.boot_time,
            "paths": list(self.paths),
            "files": self.files,
            "changes": [c.to_json() for c in self.changes],
        }
