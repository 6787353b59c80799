"""`from: oci:<path>@sha256:<digest>`: a golden base made elsewhere, as an OCI archive or layout.

`<path>` (relative to the spec) is an OCI image layout directory or a tarball of one (what
`skopeo copy … oci-archive:`, `umoci` or `corral image export` write). The digest is required
and is the base's identity: the manifest is looked up by it, every blob is checked against its
digest as it is read, and a mismatch stops the bake. Each layer (plain or gzip) is rewritten by
corral's tar writer (`tarimport.py`: the recipe's epoch, hard links as files, devices dropped)
and cached by the original layer's digest, so the image made on the base is reproducible.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, cast

from corral.errors import BakeError, MissingFileError, UsageError
from corral.images import oci
from corral.images.bases import tmp_dir
from corral.images.cache import CachedLayer
from corral.images.digests import canonical_json, digest_bytes, hex_of, is_digest
from corral.images.filetree import stack
from corral.images.model import Parent
from corral.images.store import ImageStore
from corral.images.tarimport import layer_from_tar

OCI_BASE_FORMAT = 1  # bump when the layer made from the same foreign layer changes


def parent(store: ImageStore, reference: str, spec_dir: Path, epoch: int = 0) -> Parent:
    """The base `reference` ("bases/golden.tar@sha256:…") as a recipe's parent."""
    where, _, digest = reference.partition("@")
    if Path(where).is_absolute():
        raise UsageError(
            f"from: oci:{where} is an absolute path",
            hint="give it relative to the spec file's directory, so the bake is the same "
            "in every checkout",
        )
    path = spec_dir / where
    if not path.exists():
        raise MissingFileError(
            f"from: oci:{where}: no OCI archive or layout at {path}",
            hint="put the base beside the spec (a path relative to it), or fix `from:`",
        )
    with _opened(path) as source:
        if not digest:
            found = ", ".join(_index_digests(source)) or "none"
            raise UsageError(
                f"from: oci:{where} names no digest (the archive's index lists: {found})",
                hint=f"pin the base by its manifest digest: from: oci:{where}@sha256:…",
            )
        if not is_digest(digest):
            raise UsageError(f"from: oci:{reference}: {digest!r} is not a sha256 digest")
        manifest = _json(source, digest, where)
        if manifest.get("mediaType", oci.MANIFEST) != oci.MANIFEST or "layers" not in manifest:
            raise UsageError(
                f"from: oci:{reference} is not an image manifest (an index of platforms?)",
                hint="pin the digest of the image manifest for this platform",
            )
        config = _json(source, str(manifest["config"]["digest"]), where)
        layers = [_layer(store, source, dict(layer), where, epoch) for layer in manifest["layers"]]
    entries = [store.layer_entries(cached) for cached in layers]
    files = stack(entries)
    return Parent(
        label=f"oci:{where}@{digest}",
        layers=[oci.descriptor(oci.LAYER, c.digest, c.size) for c in layers],
        files=files,
        has_os=any(f.path == "bin/sh" for f in files),
        config=dict(config.get("config") or {}),
    )


def _layer(
    store: ImageStore, source: _Source, layer: dict[str, Any], where: str, epoch: int
) -> CachedLayer:
    digest = str(layer["digest"])
    key = digest_bytes(
        canonical_json({"v": OCI_BASE_FORMAT, "base": "oci", "layer": digest, "epoch": epoch})
    )
    cached = store.cached(key)
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory(dir=tmp_dir(store), prefix="oci-") as work:
        with source.open(digest, where) as raw:
            checked = _Hashing(raw)
            stream = cast(IO[bytes], checked)
            if str(layer.get("mediaType", "")).endswith("+gzip"):
                stream = cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
            files = Path(work) / "files"
            entries = layer_from_tar(stream, files, epoch, src=f"oci:{where} layer {digest}")
            checked.drain()
        if checked.digest != digest:
            raise BakeError(
                f"from: oci:{where}: layer {digest} is corrupted (it hashes to {checked.digest})",
                hint="make the archive again where it came from, and check the copy",
            )
        cached = store.write_layer(entries, with_entries=True)
    store.remember(key, cached)
    return cached


class _Source:
    """Blobs of an OCI layout, in a directory or a tarball."""

    def __init__(self, path: Path, tar: tarfile.TarFile | None) -> None:
        self.path, self.tar = path, tar

    def read_index(self) -> dict[str, Any]:
        try:
            with self._member("index.json") as handle:
                data: dict[str, Any] = json.loads(handle.read())
                return data
        except (KeyError, FileNotFoundError, ValueError):
            return {}

    @contextmanager
    def open(self, digest: str, where: str) -> Iterator[IO[bytes]]:
        try:
            with self._member(f"blobs/sha256/{hex_of(digest)}") as handle:
                yield handle
        except (KeyError, FileNotFoundError):
            raise UsageError(
                f"from: oci:{where} holds no blob {digest}",
                hint="check the digest in `from:` against the archive's index.json",
            ) from None

    @contextmanager
    def _member(self, name: str) -> Iterator[IO[bytes]]:
        if self.tar is None:
            with open(self.path / name, "rb") as handle:
                yield handle
            return
        member = self.tar.getmember(name)
        extracted = self.tar.extractfile(member)
        if extracted is None:
            raise KeyError(name)
        with extracted:
            yield extracted


@contextmanager
def _opened(path: Path) -> Iterator[_Source]:
    if path.is_dir():
        yield _Source(path, None)
        return
    try:
        tar = tarfile.open(path, "r:")  # noqa: SIM115 (closed by the `with` below)
    except tarfile.TarError as exc:
        raise UsageError(f"from: oci:{path.name} is neither a directory nor a tarball") from exc
    with tar:
        yield _Source(path, tar)


def _index_digests(source: _Source) -> list[str]:
    return [str(m.get("digest")) for m in source.read_index().get("manifests", [])]


def _json(source: _Source, digest: str, where: str) -> dict[str, Any]:
    with source.open(digest, where) as handle:
        data = handle.read()
    if digest_bytes(data) != digest:
        raise BakeError(
            f"from: oci:{where}: blob {digest} is corrupted (it hashes to {digest_bytes(data)})",
            hint="make the archive again where it came from, and check the copy",
        )
    try:
        parsed: dict[str, Any] = json.loads(data)
    except ValueError as exc:
        raise UsageError(f"from: oci:{where}: {digest} is not JSON") from exc
    return parsed


class _Hashing:
    """A read-only stream that hashes what is read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hash.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    @property
    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"
