"""A tar made by another tool (mmdebstrap, another registry's layer) as corral's layer input.

The foreign tar is read once: its entries keep their modes and owners, regular files' bytes are
kept under a work directory, hard links become regular files, devices and the contents of
/dev and /proc are dropped (the sandbox mounts its own), and OCI whiteouts stay whiteouts.
corral's own tar writer then writes the layer, so mtimes, header fields and order are corral's
(law 2) whatever the tool that made the original.
"""

from __future__ import annotations

import hashlib
import posixpath
import stat
import tarfile
from pathlib import Path
from typing import IO

from corral.errors import BakeError
from corral.images.context import LayerInput
from corral.images.model import DIR_MODE, FileEntry

_SANDBOX_MOUNTS = ("dev", "proc")


def layer_from_tar(source: IO[bytes], files: Path, epoch: int, *, src: str) -> LayerInput:
    """The layer input of the tar read (as a stream, compressed or not) from `source`."""
    files.mkdir(parents=True, exist_ok=True)
    entries: dict[str, FileEntry] = {}
    sources: dict[str, Path] = {}
    try:
        with tarfile.open(fileobj=source, mode="r|*") as tar:
            for number, member in enumerate(tar):
                _add(tar, member, files / str(number), entries, sources, src)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BakeError(f"{src}: cannot read the layer's tar: {exc}") from exc
    for mount in _SANDBOX_MOUNTS:
        entries.setdefault(mount, FileEntry(mount, "dir", DIR_MODE))
    ordered = [entries[p] for p in sorted(entries)]
    return LayerInput(src=src, dest="/", entries=ordered, sources=sources, epoch=epoch)


def _add(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    host: Path,
    entries: dict[str, FileEntry],
    sources: dict[str, Path],
    src: str,
) -> None:
    path = posixpath.normpath(member.name).lstrip("/")
    if path in ("", ".") or path == ".." or path.startswith("../"):
        return
    if path.split("/", 1)[0] in _SANDBOX_MOUNTS and "/" in path:
        return
    mode = stat.S_IMODE(member.mode)
    uid, gid = member.uid, member.gid
    if member.isdir():
        entries[path] = FileEntry(path, "dir", mode, uid=uid, gid=gid)
    elif member.issym():
        entries[path] = FileEntry(path, "symlink", 0o777, target=member.linkname, uid=uid, gid=gid)
    elif member.islnk():
        target = posixpath.normpath(member.linkname).lstrip("/")
        if target not in sources:
            raise BakeError(f"{src}: /{path} is a hard link to /{target}, which it does not hold")
        linked = entries[target]
        entries[path] = FileEntry(path, "file", mode, linked.size, linked.sha256, uid=uid, gid=gid)
        sources[path] = sources[target]
    elif member.isreg():
        digest = hashlib.sha256()
        data = tar.extractfile(member)
        assert data is not None
        with open(host, "wb") as out:
            while chunk := data.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        entries[path] = FileEntry(
            path, "file", mode, member.size, digest.hexdigest(), uid=uid, gid=gid
        )
        sources[path] = host
    # devices and fifos: dropped (images hold files, directories and links)
