"""Export one image of the store as a tarball a Docker engine loads (`docker load`).

No registry is involved: the engine gets corral's own blobs. Docker 20.10 refuses a plain OCI
archive but loads a tarball that holds the OCI layout *and* a Docker-style `manifest.json`
(Config = the config blob's path, Layers = the layer blobs' paths, uncompressed). The loaded
image's ID is then the OCI config digest, so a driver can tell whether an engine already has
an image without loading it again.

Besides the image's own blobs it carries the file manifest (for the auditor of an imported
image) and, when the image has one, its SBOM artifact: the SBOM's manifest digest is an
annotation of the index entry (`io.corral.sbom`), so index.json still lists one image (as
skopeo expects) and `corral image import` re-attaches the SBOM as the image's referrer.

The tarball is deterministic: members in a fixed order, every header with mtime 0, owner 0:0
and fixed modes, so the same image always exports to the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import BinaryIO

from corral.images import oci, sbom
from corral.images.blobs import VerifiedReader
from corral.images.digests import canonical_json, digest_bytes, hex_of
from corral.images.model import EPOCH
from corral.images.store import ImageStore

SBOM = "io.corral.sbom"  # exported index entry: the digest of the image's SBOM artifact
_DIR_MODE = 0o755
_FILE_MODE = 0o444  # blobs are immutable


def export_docker_archive(
    store: ImageStore, digest: str, out: BinaryIO | Path, *, tag: str
) -> None:
    """Write image `digest` (an OCI manifest digest in `store`) to `out` as a loadable
    tarball, tagged `tag` ("repo:tag") once loaded. Every blob is checked against its digest
    on the way out (StateError when one is corrupted)."""
    info = store.info(digest)  # UsageError when the store lacks the image
    manifest = store.blobs.read(digest)
    if isinstance(out, Path):
        with open(out, "wb") as handle:
            _write(store, digest, manifest, info.config_digest, info.layers, handle, tag)
    else:
        _write(store, digest, manifest, info.config_digest, info.layers, out, tag)


def _extras(store: ImageStore, manifest: bytes) -> tuple[list[str], dict[str, str]]:
    """Blobs that go with the image but are not its layers (file manifest, SBOM artifact),
    and the index annotations that find them again."""
    blobs: list[str] = []
    notes: dict[str, str] = {}
    files = (json.loads(manifest).get("annotations") or {}).get(oci.FILES)
    if files:
        blobs.append(str(files))
    artifact = sbom.find(store, digest_bytes(manifest))
    if artifact is not None:
        parts = json.loads(store.blobs.read(artifact))
        blobs += [artifact, str(parts["config"]["digest"])]
        blobs += [str(layer["digest"]) for layer in parts["layers"]]
        notes[SBOM] = artifact
    return blobs, notes


def _write(
    store: ImageStore,
    digest: str,
    manifest: bytes,
    config_digest: str,
    layers: list[str],
    out: BinaryIO,
    tag: str,
) -> None:
    extra, notes = _extras(store, manifest)
    index = oci.empty_index()
    entry = oci.descriptor(oci.MANIFEST, digest, len(manifest))
    index["manifests"] = [{**entry, "annotations": {oci.REF_NAME: tag, **notes}}]
    docker_manifest = [
        {
            "Config": _blob_path(config_digest),
            "RepoTags": [tag],
            "Layers": [_blob_path(layer) for layer in layers],
        }
    ]
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
        _add_bytes(tar, "index.json", canonical_json(index))
        _add_bytes(tar, "manifest.json", json.dumps(docker_manifest).encode())
        for name in ("blobs/", "blobs/sha256/"):
            tar.addfile(_header(name, tarfile.DIRTYPE, 0, _DIR_MODE))
        _add_bytes(tar, _blob_path(digest), manifest)
        seen: set[str] = set()
        for blob in [config_digest, *layers, *extra]:
            if blob in seen:  # two identical layers: one member
                continue
            seen.add(blob)
            size = store.blobs.path(blob).stat().st_size
            reader = VerifiedReader(store.blobs, blob)
            try:
                tar.addfile(_header(_blob_path(blob), tarfile.REGTYPE, size, _FILE_MODE), reader)
                reader.finish()  # raises if what went out does not hash to its name
            finally:
                reader.close()


def _blob_path(digest: str) -> str:
    return f"blobs/sha256/{hex_of(digest)}"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_header(name, tarfile.REGTYPE, len(data), _FILE_MODE), io.BytesIO(data))


def _header(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = mode
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
