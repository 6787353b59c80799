"""Files on disk against an image's file manifest. Pure: data in, findings out."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from corral.audit.report import Finding, short
from corral.audit.tree import FileState
from corral.images.model import FileEntry

# Unpacking never sets setuid/setgid/sticky bits on the host (images/unpack.py), so the
# manifest's mode, masked so, is what must be on disk; any extra bit is a finding.
_UNPACKED_BITS = 0o777


def compare_manifest(
    expected: Sequence[FileEntry],
    observed: Mapping[str, FileState],
    *,
    owners: Collection[tuple[int, int]] = (),
    mode_bits: int = _UNPACKED_BITS,
) -> list[Finding]:
    """Findings, sorted by path, for `observed` (paths relative to the image root, as in the
    manifest; the root itself excluded) against `expected`.

    `owners`: (uid, gid) pairs accepted besides each entry's own, since unpacking as a user
    leaves that user the owner of every file. Empty: owners are not checked.
    `mode_bits`: the mode bits the files on disk keep (an engine's layers keep them all)."""
    findings: list[Finding] = []
    for entry in expected:
        path = "/" + entry.path
        found = observed.get(entry.path)
        if found is None:
            findings.append(Finding("removed", path, f"{path} ({entry.type})"))
            continue
        findings += _compare_entry(entry, found, path, owners, mode_bits)
    known = {entry.path for entry in expected}
    for rel in observed:
        if rel not in known:
            path = "/" + rel
            findings.append(Finding("added", path, f"{path} ({observed[rel].type})"))
    return sorted(findings, key=lambda f: (f.path, f.kind))


def _compare_entry(
    entry: FileEntry,
    found: FileState,
    path: str,
    owners: Collection[tuple[int, int]],
    mode_bits: int = _UNPACKED_BITS,
) -> list[Finding]:
    if found.type != entry.type:
        return [Finding("type", path, f"{path} is a {found.type} ≠ manifest {entry.type}")]
    findings: list[Finding] = []
    if entry.type == "file" and found.sha256 != entry.sha256:
        if found.error:
            detail = f"{path} cannot be read ({found.error})"
        else:
            detail = f"{path} sha256 {short(found.sha256)} ≠ manifest {short(entry.sha256)}"
        findings.append(Finding("tampered", path, detail))
    if entry.type == "symlink" and found.target != entry.target:
        findings.append(
            Finding("target", path, f"{path} → {found.target} ≠ manifest → {entry.target}")
        )
    expected_mode = entry.mode & mode_bits
    if entry.type != "symlink" and found.mode != expected_mode:
        findings.append(
            Finding("mode", path, f"{path} {found.mode:04o} ≠ manifest {expected_mode:04o}")
        )
    owner = (found.uid, found.gid)
    if owners and owner != (entry.uid, entry.gid) and owner not in owners:
        findings.append(
            Finding(
                "owner", path, f"{path} {owner[0]}:{owner[1]} ≠ manifest {entry.uid}:{entry.gid}"
            )
        )
    return findings
