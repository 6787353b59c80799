"""What a container sees, read from the host through the engine's overlay2 directories.

An image's layers are plain directories on the host (`LowerDir`, top first); a container's
own writable layer is its `UpperDir`. Overlay marks a deletion with a whiteout (a character
device 0/0) and hides a lower directory's content with an opaque directory (xattr
`trusted.overlay.opaque=y`). Files are hashed through the stat cache, like an unpacked root.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterator, Mapping, Sequence

from corral.audit.manifest import compare_manifest
from corral.audit.report import Finding
from corral.audit.statcache import StatCache
from corral.audit.tree import scan, walk
from corral.images.model import FileEntry

_OPAQUE = "trusted.overlay.opaque"
ALL_MODE_BITS = 0o7777  # an engine's layers keep setuid/setgid/sticky as the image has them
_CHECK_OWNERS = ((-1, -1),)  # compare owners with the manifest, accepting no other


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, _OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _entries(root: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(path relative to root, path, lstat) below `root`."""
    prefix = len(root.rstrip("/")) + 1
    for path, st in walk(root):
        if len(path) >= prefix:
            yield path[prefix:], path, st


def _hidden(rel: str, hidden: Collection[str]) -> bool:
    parts = rel.split("/")
    return any("/".join(parts[:i]) in hidden for i in range(1, len(parts) + 1))


def image_findings(
    layers: Sequence[str],
    expected: Sequence[FileEntry],
    cache: StatCache,
    *,
    full: bool = False,
    workers: int | None = None,
) -> list[Finding]:
    """The image's layers (top first), merged as overlay merges them, against its manifest."""
    visible: dict[str, tuple[str, os.stat_result]] = {}
    hidden: set[str] = set()  # whiteouts and opaque dirs of the layers above
    for layer in layers:
        marks: set[str] = set()
        for rel, path, st in _entries(layer):
            if _hidden(rel, hidden):
                continue
            if is_whiteout(st):
                marks.add(rel)
                continue
            if stat.S_ISDIR(st.st_mode) and _is_opaque(path) and rel not in visible:
                marks.add(rel)  # lower layers' content of it is hidden, itself is not
            visible.setdefault(rel, (path, st))
        hidden |= marks
    found = scan(((p, st) for p, st in visible.values()), cache, full=full, workers=workers)
    observed = {rel: found[path] for rel, (path, _) in visible.items()}
    return compare_manifest(expected, observed, owners=_CHECK_OWNERS, mode_bits=ALL_MODE_BITS)


def container_findings(
    upper: str,
    expected: Mapping[str, FileEntry],
    stubs: Collection[str],
    cache: StatCache,
    *,
    full: bool = False,
    workers: int | None = None,
) -> list[Finding]:
    """A container's own writable layer: with a read-only root it holds only the engine's
    mount points (`stubs`, relative paths, and their parent dirs); anything else was put there
    from the host. A whiteout is a removed file; a file is an added or a changed one."""
    allowed = set(stubs)
    for stub in stubs:
        parts = stub.split("/")
        allowed |= {"/".join(parts[:i]) for i in range(1, len(parts))}
    walked: dict[str, tuple[str, os.stat_result]] = {}
    findings: list[Finding] = []
    for rel, path, st in _entries(upper):
        made_for_mount = rel in allowed and stat.S_ISDIR(st.st_mode) and rel not in expected
        if rel in stubs or made_for_mount:
            continue  # the engine's own mount point, or a dir it made for one
        if is_whiteout(st):
            what = expected[rel].type if rel in expected else "absent from the image"
            findings.append(Finding("removed", "/" + rel, f"/{rel} ({what}) in its own layer"))
            continue
        walked[rel] = (path, st)
    found = scan(((p, st) for p, st in walked.values()), cache, full=full, workers=workers)
    observed = {rel: found[path] for rel, (path, _) in walked.items()}
    known = [expected[rel] for rel in observed if rel in expected]
    findings += compare_manifest(known, observed, owners=_CHECK_OWNERS, mode_bits=ALL_MODE_BITS)
    return sorted(findings, key=lambda f: (f.path, f.kind))
