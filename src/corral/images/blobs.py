"""Content-addressed blobs: `blobs/sha256/<hex>`, written atomically, never changed in place.

A blob is written to a temporary file under `tmp/` (same filesystem), fsynced, made read-only
and renamed to its digest, so a reader or a crash never sees half a blob. Every read checks the
content against its name; a corrupted blob is moved aside to `corrupt/` so that the next bake
writes it afresh instead of trusting it (the layer cache only trusts blobs that exist).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from corral.errors import StateError
from corral.images.digests import ALGORITHM, digest_bytes, hex_of

_CHUNK = 1 << 20
BLOB_MODE = 0o444


class BlobWriter:
    """A write-only stream that hashes what goes through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._handle.write(data)

    @property
    def digest(self) -> str:
        return f"{ALGORITHM}:{self._hash.hexdigest()}"


class VerifiedReader(io.RawIOBase):
    """Reads a blob while hashing it; `finish()` drains it and raises if it is not intact."""

    def __init__(self, store: BlobStore, digest: str) -> None:
        self._store = store
        self._digest = digest
        self._hash = hashlib.sha256()
        self._handle = store.open_raw(digest)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        count = self._handle.readinto(buffer)
        if count:
            self._hash.update(buffer[:count])
        return count or 0

    def finish(self) -> None:
        while self.read(_CHUNK):
            pass
        self._store.check(self._digest, f"{ALGORITHM}:{self._hash.hexdigest()}")

    def close(self) -> None:
        self._handle.close()
        super().close()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "blobs" / ALGORITHM
        self._tmp = root / "tmp"
        self._corrupt = root / "corrupt"

    def path(self, digest: str) -> Path:
        return self.dir / hex_of(digest)

    def has(self, digest: str, size: int | None = None) -> bool:
        try:
            found = self.path(digest).stat().st_size
        except FileNotFoundError:
            return False
        return size is None or found == size

    def put(self, data: bytes) -> tuple[str, int]:
        """Store `data` unless already present; (digest, size)."""
        digest = digest_bytes(data)
        if not self.has(digest, len(data)):
            with self.writing() as writer:
                writer.write(data)
        return digest, len(data)

    @contextlib.contextmanager
    def writing(self) -> Iterator[BlobWriter]:
        """Stream a new blob; on a clean exit it is published under its digest."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="blob-")
        tmp = Path(tmp_name)
        try:
            with open(fd, "wb", buffering=_CHUNK) as handle:
                writer = BlobWriter(handle)
                yield writer
                handle.flush()
                os.fsync(handle.fileno())
            final = self.path(writer.digest)
            if self.has(writer.digest, writer.size):
                tmp.unlink()  # already there: blobs are immutable, keep the one readers hold
            else:
                os.chmod(tmp, BLOB_MODE)
                os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def open_raw(self, digest: str) -> io.FileIO:
        try:
            return io.FileIO(self.path(digest), "r")
        except FileNotFoundError:
            raise StateError(
                f"image blob {digest} is missing from {self.dir}",
                hint="bake the image again (`corral bake`) to restore it",
            ) from None

    def read(self, digest: str) -> bytes:
        """The blob's bytes, checked against its digest."""
        with self.open_raw(digest) as handle:
            data = handle.readall()
        self.check(digest, digest_bytes(data))
        return data

    def check(self, digest: str, actual: str) -> None:
        if actual == digest:
            return
        moved = self._quarantine(digest)
        raise StateError(
            f"image blob {digest} is corrupted: its content hashes to {actual}"
            + (f" (moved aside to {moved})" if moved else ""),
            hint="bake the image again (`corral bake`) to write an intact copy",
        )

    def _quarantine(self, digest: str) -> Path | None:
        self._corrupt.mkdir(parents=True, exist_ok=True)
        target = self._corrupt / hex_of(digest)
        try:
            os.replace(self.path(digest), target)
        except FileNotFoundError:  # another reader moved it first
            return None
        return target
