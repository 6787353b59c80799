"""Stacking layers: the filesystem an image's layers add up to.

The rules match what unpacking does on disk (`unpack.py`), so the file manifest describes the
rootfs exactly: a later entry replaces an earlier one at the same path; a non-directory that
replaces a directory removes everything below it; a directory entry over a directory keeps its
contents; a whiteout (`.wh.name`) removes `name` and everything below it.
"""

from __future__ import annotations

from collections.abc import Iterable

from corral.images.model import FileEntry


def stack(layers: Iterable[Iterable[FileEntry]]) -> list[FileEntry]:
    """The merged filesystem of `layers` (lowest first), sorted by path."""
    tree: dict[str, FileEntry] = {}
    for layer in layers:
        for entry in layer:
            if entry.is_whiteout:
                gone = entry.whited_out
                tree.pop(gone, None)
                for path in [p for p in tree if p.startswith(gone + "/")]:
                    del tree[path]
                continue
            previous = tree.get(entry.path)
            if previous is not None and previous.type == "dir" and entry.type != "dir":
                below = entry.path + "/"
                for path in [p for p in tree if p.startswith(below)]:
                    del tree[path]
            tree[entry.path] = entry
    return [tree[path] for path in sorted(tree)]
