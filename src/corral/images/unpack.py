"""Unpacking an image's layers into a rootfs directory, once, atomically.

The layers are unpacked into `<rootfs_root>/.partial/<hex>.<pid>.<random>` and the directory is
renamed to `<rootfs_root>/<hex>` only when every layer was read in full and matched its digest,
so no caller (and no crash) ever sees half an image. When two callers race, the first rename
wins and the other discards its copy. Partial directories of dead processes are removed.

Entries are applied with the rules of `filetree.stack` (later replaces earlier; a file over a
directory removes it) so the rootfs matches the image's file manifest. Files get the tar's
mode exactly (not filtered by the umask); owners are not restored (instances run as the user).
"""

from __future__ import annotations

import os
import posixpath
import secrets
import shutil
import stat
import tarfile
from pathlib import Path
from typing import IO, cast

from corral.errors import StateError
from corral.images.blobs import BlobStore, VerifiedReader
from corral.images.model import WHITEOUT

_CHUNK = 1 << 20
PARTIAL = ".partial"


class _BadEntry(Exception):
    """A layer holds something corral never writes (unsafe path, device, hard link)."""


def materialise(blobs: BlobStore, layers: list[str], final: Path) -> Path:
    """`final` holding the unpacked `layers`, created if it does not exist yet."""
    if final.is_dir():
        return final
    partials = final.parent / PARTIAL
    partials.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(partials, final.name)
    work = partials / f"{final.name}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        work.mkdir(mode=0o755)
        os.chmod(work, 0o755)
        for digest in layers:
            _unpack_layer(blobs, digest, work)
        try:
            os.rename(work, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(work)  # someone else finished first: theirs is identical
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def apply_layer(blobs: BlobStore, digest: str, root: Path) -> None:
    """Unpack one more layer over an existing (private, writable) root."""
    _unpack_layer(blobs, digest, root)


def _unpack_layer(blobs: BlobStore, digest: str, root: Path) -> None:
    with VerifiedReader(blobs, digest) as reader:
        try:
            with tarfile.open(fileobj=cast(IO[bytes], reader), mode="r|") as tar:
                for member in tar:
                    _extract(tar, member, root)
        except (tarfile.TarError, _BadEntry) as exc:
            reader.finish()  # a corrupted blob is reported as such, not as a bad tar
            raise StateError(
                f"layer {digest} cannot be unpacked: {exc}",
                hint="this layer was not written by corral; bake the image again",
            ) from exc
        reader.finish()


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path) -> None:
    name = member.name.rstrip("/")
    normal = posixpath.normpath(name)
    if normal != name or name.startswith("/") or normal.split("/")[0] in (".", ".."):
        raise _BadEntry(f"unsafe path {member.name!r}")
    parent = _ensure_dirs(root, posixpath.dirname(name))
    target = parent / posixpath.basename(name)
    mode = member.mode & 0o777  # never setuid/setgid on the host
    base = posixpath.basename(name)
    if base.startswith(WHITEOUT) and member.isreg():
        _remove(parent / base.removeprefix(WHITEOUT))  # the layer deletes what lies below
        return
    if member.isdir():
        if not _is_real_dir(target):
            _remove(target)
            target.mkdir()
        os.chmod(target, mode)
        return
    _remove(target)
    if member.isreg():
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has content
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with open(fd, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK)
            out.flush()  # before utime: a later flush would set mtime to now
            os.fchmod(out.fileno(), mode)
            os.utime(out.fileno(), (member.mtime, member.mtime))
    elif member.issym():
        os.symlink(member.linkname, target)
    else:
        raise _BadEntry(f"{member.name!r} is neither a file, a directory nor a symlink")


def _ensure_dirs(root: Path, relative: str) -> Path:
    """root/relative as real directories: never follow a symlink out of the rootfs."""
    current = root
    for part in relative.split("/") if relative else []:
        current = current / part
        if not _is_real_dir(current):
            _remove(current)
            current.mkdir()
            os.chmod(current, 0o755)  # not filtered by the umask
    return current


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _remove_abandoned(partials: Path, hex_name: str) -> None:
    """Drop partial unpacks of this image left by processes that died (crash safety)."""
    for candidate in partials.glob(f"{hex_name}.*"):
        try:
            pid = int(candidate.name.split(".")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(candidate, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
