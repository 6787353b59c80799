"""A deterministic tar writer: the same entries always give the same bytes.

The headers are written here rather than by `tarfile`, whose output has changed between Python
versions: the digest must not depend on which Python baked the image (law 2). The format is
POSIX pax (ustar headers, plus a pax extended header only for a path or link target that is
longer than 100 bytes or not ASCII, or a file of 8 GiB or more). Every header has the recipe's
epoch as mtime (EPOCH by default), the recipe's uid/gid (0 by default), empty uname/gname, the
normalised mode, and no atime/ctime/device data. Directories
are written with a trailing "/". The archive ends with two zero blocks and is not compressed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from corral.errors import BakeError
from corral.images.context import LayerInput
from corral.images.model import EPOCH, FileEntry

BLOCK = 512
_CHUNK = 1 << 20
_TYPEFLAG = {"file": b"0", "symlink": b"2", "dir": b"5"}
_MAX_USTAR_SIZE = 8**11  # 11 octal digits


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


def write_layer(layer: LayerInput, out: Sink) -> None:
    """Write the layer's tar to `out`. Raises BakeError if a file changed since it was hashed."""
    for entry in layer.entries:
        out.write(entry_header(entry, layer.epoch))
        if entry.type == "file" and entry.path in layer.sources:  # not a whiteout
            _copy_content(entry, layer.sources[entry.path], out)
    out.write(b"\0" * (2 * BLOCK))


def entry_header(entry: FileEntry, epoch: int = EPOCH) -> bytes:
    name = entry.path + "/" if entry.type == "dir" else entry.path
    link = entry.target or ""
    size = entry.size if entry.type == "file" else 0
    pax: dict[str, str] = {}
    if _needs_pax(name):
        pax["path"] = name
    if _needs_pax(link):
        pax["linkpath"] = link
    if size >= _MAX_USTAR_SIZE:
        pax["size"] = str(size)
    head = b""
    if pax:
        records = b"".join(_pax_record(k, v) for k, v in sorted(pax.items()))
        head = _ustar("././@PaxHeader", b"x", 0o644, len(records), "", epoch)
        head += _padded(records)
    return head + _ustar(
        name if "path" not in pax else _ascii_stub(name),
        _TYPEFLAG[entry.type],
        entry.mode,
        0 if "size" in pax else size,
        link if "linkpath" not in pax else _ascii_stub(link),
        epoch,
        (entry.uid, entry.gid),
    )


def _copy_content(entry: FileEntry, source: Path, out: Sink) -> None:
    """Stream the file into the tar, checking it is still the content that was hashed."""
    digest = hashlib.sha256()
    written = 0
    try:
        with open(source, "rb", buffering=0) as handle:
            while written < entry.size:
                chunk = handle.read(min(_CHUNK, entry.size - written))
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
                written += len(chunk)
            grew = bool(handle.read(1))
    except OSError as exc:
        raise BakeError(f"cannot read {source}: {exc}") from exc
    if written != entry.size or grew or digest.hexdigest() != entry.sha256:
        raise BakeError(
            f"{source} changed while the image was being baked",
            hint="bake again once nothing is writing to the copied files",
        )
    remainder = entry.size % BLOCK
    if remainder:
        out.write(b"\0" * (BLOCK - remainder))


def _needs_pax(text: str) -> bool:
    return not text.isascii() or len(text) > 100


def _ascii_stub(text: str) -> str:
    """What the ustar field holds when the real value is in the pax header."""
    return text.encode("ascii", "replace")[:100].decode("ascii")


def _pax_record(keyword: str, value: str) -> bytes:
    body = f" {keyword}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:  # the length counts its own digits
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _padded(data: bytes) -> bytes:
    remainder = len(data) % BLOCK
    return data + b"\0" * ((BLOCK - remainder) if remainder else 0)


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _field(text: str, width: int) -> bytes:
    raw = text.encode("ascii")
    return raw + b"\0" * (width - len(raw))


def _ustar(
    name: str,
    typeflag: bytes,
    mode: int,
    size: int,
    linkname: str,
    epoch: int,
    owner: tuple[int, int] = (0, 0),
) -> bytes:
    header = b"".join(
        (
            _field(name, 100),
            _octal(mode, 8),
            _octal(owner[0], 8),  # uid
            _octal(owner[1], 8),  # gid
            _octal(size, 12),
            _octal(epoch, 12),
            b" " * 8,  # checksum, computed below over the header with these spaces
            typeflag,
            _field(linkname, 100),
            b"ustar\x0000",
            _field("", 32),  # uname
            _field("", 32),  # gname
            _octal(0, 8),  # devmajor
            _octal(0, 8),  # devminor
            _field("", 155),  # prefix
            b"\0" * 12,
        )
    )
    checksum = b"%06o\0 " % sum(header)
    return header[:148] + checksum + header[156:]
