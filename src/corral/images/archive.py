"""Sharing what a store holds: resolved bases and whole images, as tarballs.

`export_bases` writes the pinned .debs (`bases/<sha256>.deb`); images are exported by
`export.export_docker_archive` (an OCI layout plus Docker's manifest.json). `import_archive`
reads either kind: each blob is checked against its digest before it enters the store, and
each .deb against the sha256 its name claims, so an archive cannot smuggle in other bytes.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.errors import UsageError
from corral.images import bases, export, oci, sbom
from corral.images.bases import BasePin, sha256_file, tmp_dir
from corral.images.digests import ALGORITHM, is_digest
from corral.images.lockfile import Pin
from corral.images.store import ImageStore

_BASES = "bases/"
_BLOBS = f"blobs/{ALGORITHM}/"


@dataclass
class Imported:
    bases: list[BasePin] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (name, digest)
    blobs: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "bases": [pin.to_json() for pin in self.bases],
            "images": [{"name": n, "digest": d} for n, d in self.images],
            "blobs": self.blobs,
        }


def export_bases(store: ImageStore, pins: list[Pin], out: Path) -> None:
    """A tarball of the pinned bases' .debs (deterministic: sorted, mtime 0, owner 0)."""
    debs = {deb.sha256: deb for pin in pins for deb in pin.debs}
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for pin in (debs[sha256] for sha256 in sorted(debs)):
            path = bases.ensure(store, pin)
            info = tarfile.TarInfo(f"{_BASES}{pin.sha256}.deb")
            info.size, info.mode, info.mtime = path.stat().st_size, 0o444, 0
            with open(path, "rb") as handle:
                tar.addfile(info, handle)


def import_archive(store: ImageStore, archive: Path) -> Imported:
    """Bring the bases and images of `archive` into `store`."""
    if not archive.is_file():
        raise UsageError(f"{archive} does not exist", hint="give the path of an exported tarball")
    result = Imported()
    with tempfile.TemporaryDirectory(dir=tmp_dir(store)) as work, _open(archive) as tar:
        index: dict[str, Any] | None = None
        for member in tar:
            if member.isfile() and member.name.startswith(_BASES) and member.name.endswith(".deb"):
                claimed = member.name.removeprefix(_BASES).removesuffix(".deb")
                deb = Path(work) / "base.deb"
                _extract(tar, member, deb)
                if sha256_file(deb) != claimed:
                    raise UsageError(f"{archive}: {member.name} does not hash to its name")
                result.bases.append(bases.import_deb(store, deb))
            elif member.isfile() and member.name.startswith(_BLOBS):
                digest = f"{ALGORITHM}:{member.name.removeprefix(_BLOBS)}"
                if not is_digest(digest):
                    continue
                source = tar.extractfile(member)
                assert source is not None
                with store.blobs.writing() as writer:
                    shutil.copyfileobj(source, writer)
                if writer.digest != digest:
                    raise UsageError(f"{archive}: {member.name} does not hash to its name")
                result.blobs += 1
            elif member.isfile() and member.name == "index.json":
                source = tar.extractfile(member)
                assert source is not None
                index = json.loads(source.read())
        for entry in (index or {}).get("manifests", []):
            name = (entry.get("annotations") or {}).get(oci.REF_NAME)
            digest = str(entry.get("digest"))
            if not name or not store.has(digest):
                continue
            name = str(name).split(":", 1)[0]  # Docker-style "web:tag" → the name
            store.tag(name, digest)
            result.images.append((name, digest))
            artifact = str((entry.get("annotations") or {}).get(export.SBOM, ""))
            if is_digest(artifact) and store.has(artifact):
                size = store.blobs.path(artifact).stat().st_size
                sbom.adopt(store, artifact, size, digest)
    if not result.bases and not result.images:
        raise UsageError(
            f"{archive} holds no corral bases and no tagged image",
            hint="export them with `corral image export`",
        )
    return result


def _open(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r|*")
    except tarfile.TarError as exc:
        raise UsageError(f"{archive} is not a tarball: {exc}") from exc


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = tar.extractfile(member)
    assert source is not None
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out)
