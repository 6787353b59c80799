"""A container's own writable layer as its engine reports it (`GET /containers/{id}/changes`,
`docker diff`) → findings. Pure.

Every corral container has a read-only root, so its own layer holds only what the engine made
to mount onto (tmpfs, volumes, secrets, its init) and the directories above those; any other
path added, changed or deleted there was put in from the host. What sits inside a mount is
not in the layer and not reported. The engine lists what the container sees: a file slipped
into a directory the container has already looked up may not show until it looks again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from corral.audit.report import Finding

_KINDS = {0: "tampered", 1: "added", 2: "removed"}  # the engine's Kind: modified, added, deleted
_WORDS = {0: "changed", 1: "added", 2: "deleted"}


def diff_findings(changes: Iterable[Mapping[str, Any]], stubs: Collection[str]) -> list[Finding]:
    """Findings for the engine's change list; `stubs`: its mount points (relative paths)."""
    parents = {"/".join(s.split("/")[:i]) for s in stubs for i in range(1, s.count("/") + 1)}
    findings = []
    for change in changes:
        path = str(change.get("Path") or "")
        kind = int(change.get("Kind", 0))
        rel = path.strip("/")
        if not rel or _at_or_below(rel, stubs) or (rel in parents and kind != 2):
            continue  # a mount point, inside one, or a directory the engine made above one
        findings.append(
            Finding(
                _KINDS.get(kind, "tampered"),
                "/" + rel,
                f"/{rel} {_WORDS.get(kind, 'changed')} in its own layer (the engine's diff)",
            )
        )
    return sorted(findings, key=lambda f: (f.path, f.kind))


def _at_or_below(rel: str, stubs: Collection[str]) -> bool:
    return any(rel == stub or rel.startswith(stub + "/") for stub in stubs)
