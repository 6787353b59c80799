"""A copy step's inputs: the files it would put in the image, as sorted, normalised entries.

The entries fully determine the layer's bytes, so their hash is the layer cache key: a warm
bake reads and hashes the files, and nothing else. Only what the image will contain is looked
at (relative path, type, exec bit, size, content, symlink target): never mtimes, owners or the
directory the checkout lives in (law 2).
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from corral.errors import BakeError, MissingFileError, UsageError
from corral.images.digests import canonical_json, digest_bytes, hash_file
from corral.images.model import DIR_MODE, EPOCH, EXEC_MODE, FILE_MODE, LINK_MODE, FileEntry
from corral.spec.model import CopyStep

# Bump when the layer bytes produced from the same entries change (tar writer, modes, …):
# old cache entries then stop matching instead of naming layers of another format.
LAYER_FORMAT = 1


@dataclass(frozen=True)
class LayerInput:
    """What one copy step contributes: entries in tar order, and where each file's bytes are."""

    src: str
    dest: str
    entries: list[FileEntry]
    sources: dict[str, Path]  # image path → host file (regular files only)
    epoch: int = EPOCH  # every tar header's mtime

    @cached_property
    def key(self) -> str:
        """The layer cache key: equal keys give byte-identical layers."""
        payload: dict[str, Any] = {
            "v": LAYER_FORMAT,
            "entries": [e.to_json() for e in self.entries],
        }
        if self.epoch != EPOCH:
            payload["epoch"] = self.epoch
        return digest_bytes(canonical_json(payload))

    @property
    def content_size(self) -> int:
        return sum(e.size for e in self.entries)


def scan_copy(
    step: CopyStep, base_dir: Path, where: str = "copy", *, epoch: int = EPOCH
) -> LayerInput:
    """Read the files of one `copy:` step. Raises MissingFileError when its source is absent.

    `where` names the step in messages, as the spec does ("images.web.copy[1]")."""
    if Path(step.src).is_absolute():
        raise UsageError(
            f"{where}.src: {step.src!r} is an absolute path",
            hint="give it relative to the spec file's directory, so the bake is the same "
            "in every checkout",
        )
    source = base_dir / step.src
    try:
        info = source.stat()  # the named source itself is followed if it is a symlink
    except FileNotFoundError:
        raise MissingFileError(
            f"{where}.src: {step.src!r} does not exist (looked for {source})",
            hint="create it, or fix `src` in the image's `copy:` steps",
        ) from None
    except OSError as exc:
        raise BakeError(f"{where}.src: cannot read {step.src!r} ({source}): {exc}") from exc

    dest = _image_path(step.dest)
    collected: list[FileEntry] = []
    sources: dict[str, Path] = {}
    if stat.S_ISDIR(info.st_mode):
        if dest:
            collected.append(FileEntry(dest, "dir", DIR_MODE))
        _walk(source, dest, collected, sources)
    elif stat.S_ISREG(info.st_mode):
        if step.dest.endswith("/"):
            dest = posixpath.join(dest, source.name) if dest else source.name
        if not dest:
            raise UsageError(
                f"{where}.dest: {step.dest!r} for the file {step.src!r} is the image root",
                hint="name the file's path in the image, e.g. dest: /app/ or /app/name",
            )
        collected.append(_file_entry(source, dest, info.st_mode))
        sources[dest] = source
    else:
        raise BakeError(
            f"{where}.src: {step.src!r} ({source}) is neither a file nor a directory",
            hint="copy regular files, directories and symlinks only",
        )
    entries = _with_parents([_owned(e, step) for e in collected], dest)
    return LayerInput(src=step.src, dest=step.dest, entries=entries, sources=sources, epoch=epoch)


def _owned(entry: FileEntry, step: CopyStep) -> FileEntry:
    """The step's `mode` (files only) and `owner` applied to one copied entry."""
    changes: dict[str, Any] = {}
    if step.mode is not None and entry.type == "file":
        changes["mode"] = step.mode
    if step.owner is not None:
        uid, _, gid = step.owner.partition(":")
        changes |= {"uid": int(uid), "gid": int(gid or uid)}
    return replace(entry, **changes) if changes else entry


def _image_path(dest: str) -> str:
    """'/app/../srv/' → 'srv': relative to the image root, '' for the root itself."""
    return posixpath.normpath("/" + dest).lstrip("/")


def _with_parents(entries: list[FileEntry], dest: str) -> list[FileEntry]:
    """Add the directories above `dest` and sort: a tar lists parents before children."""
    by_path = {e.path: e for e in entries}
    parent = posixpath.dirname(dest)
    while parent:
        by_path.setdefault(parent, FileEntry(parent, "dir", DIR_MODE))
        parent = posixpath.dirname(parent)
    return [by_path[p] for p in sorted(by_path)]


def _walk(directory: Path, prefix: str, out: list[FileEntry], sources: dict[str, Path]) -> None:
    try:
        with os.scandir(directory) as it:
            children = list(it)  # order does not matter: `_with_parents` sorts
    except OSError as exc:
        raise BakeError(f"cannot list {directory}: {exc}") from exc
    for child in children:
        name = _utf8_name(child.path, child.name)
        path = posixpath.join(prefix, name) if prefix else name
        host = Path(child.path)
        mode = child.stat(follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode):
            # Kept as a link, never followed: its target is resolved inside the instance.
            target = _utf8_name(child.path, os.readlink(host))
            out.append(FileEntry(path, "symlink", LINK_MODE, target=target))
        elif stat.S_ISDIR(mode):
            out.append(FileEntry(path, "dir", DIR_MODE))
            _walk(host, path, out, sources)
        elif stat.S_ISREG(mode):
            out.append(_file_entry(host, path, mode))
            sources[path] = host
        else:
            raise BakeError(
                f"{host} is a special file (socket, fifo or device) and cannot go in an image",
                hint="move it out of the copied directory",
            )


def _file_entry(host: Path, path: str, mode: int) -> FileEntry:
    try:
        sha256, size = hash_file(host)
    except OSError as exc:
        raise BakeError(f"cannot read {host}: {exc}") from exc
    return FileEntry(
        path, "file", EXEC_MODE if mode & 0o111 else FILE_MODE, size=size, sha256=sha256
    )


def _utf8_name(full: str, name: str) -> str:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BakeError(
            f"{full!r} has a name or link target that is not valid UTF-8",
            hint="rename it: image paths are UTF-8",
        ) from None
    return name
