"""Every image's bill of materials: a CycloneDX 1.5 JSON document, attached as an OCI referrer.

What is in the image: the Debian packages of its base (busybox-static, or a `debian:` base's
whole set: name, version, architecture, .deb sha256, as a `pkg:deb/debian/…` purl) and every
regular file (path and sha256, nested under one `files` component). It is made with
CycloneDX's own library, with a serial number and timestamp derived from the image digest and
the epoch, so the same image always gets the same document.

Storage follows OCI 1.1 referrers: an artifact manifest (`artifactType`
application/vnd.cyclonedx+json, the empty config, the document as its one layer) whose `subject`
is the image manifest. The layout has no referrers API, so index.json lists the artifact
untagged, annotated with the image it describes (`io.corral.sbom-of`). The image manifest is not
touched: attaching an SBOM never changes an image's digest. gc keeps an SBOM exactly as long as
its image; `corral image export` carries it (see `export.py`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from corral.errors import UsageError
from corral.images import oci
from corral.images.digests import canonical_json, hex_of
from corral.images.model import EPOCH, FileEntry
from corral.images.store import ImageStore

MEDIA_TYPE = "application/vnd.cyclonedx+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
SUBJECT = "io.corral.sbom-of"  # index.json: the image digest an SBOM artifact describes


def attach(
    store: ImageStore, digest: str, packages: list[dict[str, str]], *, epoch: int = EPOCH
) -> str:
    """The SBOM artifact of image `digest`, written (once) if it has none yet; its digest."""
    found = find(store, digest)
    if found is not None:
        return found
    document = render(digest, packages, store.file_manifest(digest), epoch)
    sbom_digest, sbom_size = store.blobs.put(document)
    empty_digest, empty_size = store.blobs.put(EMPTY)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "artifactType": MEDIA_TYPE,
        "config": oci.descriptor(EMPTY_MEDIA_TYPE, empty_digest, empty_size),
        "layers": [oci.descriptor(MEDIA_TYPE, sbom_digest, sbom_size)],
        "subject": oci.descriptor(oci.MANIFEST, digest, store.blobs.path(digest).stat().st_size),
    }
    artifact, size = store.blobs.put(canonical_json(manifest))
    adopt(store, artifact, size, digest)
    return artifact


def adopt(store: ImageStore, artifact: str, size: int, subject: str) -> None:
    """List an SBOM artifact (already in the blobs) in index.json as the referrer of `subject`."""
    manifest = json.loads(store.blobs.read(artifact))
    if (manifest.get("subject") or {}).get("digest") != subject:
        raise UsageError(f"SBOM artifact {artifact} does not refer to image {subject}")
    entry = {
        **oci.descriptor(oci.MANIFEST, artifact, size),
        "artifactType": MEDIA_TYPE,
        "annotations": {SUBJECT: subject},
    }

    def change(index: dict[str, Any]) -> dict[str, Any]:
        manifests = list(index.get("manifests", []))
        if any(m.get("digest") == artifact for m in manifests):
            return index
        return {**index, "manifests": [*manifests, entry]}

    store.update_index(change)


def find(store: ImageStore, digest: str) -> str | None:
    """The digest of the SBOM artifact referring to image `digest`, if there is one."""
    for entry in store.index().get("manifests", []):
        if (entry.get("annotations") or {}).get(SUBJECT) == digest:
            return str(entry["digest"])
    return None


def read(store: ImageStore, digest: str) -> dict[str, Any]:
    """The SBOM document of image `digest` (UsageError when it has none)."""
    artifact = find(store, digest)
    if artifact is None:
        raise UsageError(
            f"image {digest} has no SBOM in the store",
            hint="bake it again with this corral (`corral bake`), or import it with its SBOM",
        )
    manifest = json.loads(store.blobs.read(artifact))
    document: dict[str, Any] = json.loads(store.blobs.read(str(manifest["layers"][0]["digest"])))
    return document


def packages_in(store: ImageStore, digest: str) -> list[dict[str, str]]:
    """The Debian packages an image's SBOM lists (what an `image:` base passes on)."""
    from packageurl import PackageURL

    if find(store, digest) is None:
        return []
    found = []
    for component in read(store, digest).get("components", []):
        purl = PackageURL.from_string(component["purl"]) if component.get("purl") else None
        if purl is None or purl.type != "deb":
            continue
        hashes = {h["alg"]: h["content"] for h in component.get("hashes", [])}
        qualifiers = purl.qualifiers if isinstance(purl.qualifiers, dict) else {}
        found.append(
            {
                "package": str(purl.name),
                "version": str(purl.version),
                "architecture": str(qualifiers.get("arch", "")),
                "sha256": str(hashes.get("SHA-256", "")),
            }
        )
    return found


def render(
    digest: str, packages: Iterable[dict[str, str]], files: list[FileEntry], epoch: int = EPOCH
) -> bytes:
    """The CycloneDX JSON of an image: the same inputs always give the same bytes."""
    # Imported here: the library takes ~0.1 s to import, and most commands never render.
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.dependency import Dependency
    from cyclonedx.output.json import JsonV1Dot5
    from packageurl import PackageURL

    bom = Bom(serial_number=uuid.UUID(hex=hex_of(digest)[:32]))
    bom.metadata.timestamp = datetime.fromtimestamp(epoch, UTC)
    image = Component(name=digest, type=ComponentType.CONTAINER, version=digest, bom_ref="image")
    bom.metadata.component = image
    for package in packages:
        purl = PackageURL(
            "deb",
            "debian",
            package["package"],
            package["version"],
            {"arch": package["architecture"]},
        )
        bom.components.add(
            Component(
                name=package["package"],
                version=package["version"],
                type=ComponentType.LIBRARY,
                purl=purl,
                bom_ref=purl.to_string(),
                hashes=[HashType(alg=HashAlgorithm.SHA_256, content=package["sha256"])],
            )
        )
    # The files are nested under one component: the library's validation registers every
    # top-level component in the dependency graph with a linear search (quadratic in files).
    listing = Component(name="files", type=ComponentType.DATA, bom_ref="files")
    for entry in files:
        if entry.type == "file" and entry.sha256 is not None:
            listing.components.add(
                Component(
                    name=f"/{entry.path}",
                    type=ComponentType.FILE,
                    bom_ref=f"file:/{entry.path}",
                    hashes=[HashType(alg=HashAlgorithm.SHA_256, content=entry.sha256)],
                )
            )
    bom.components.add(listing)
    bom.dependencies.add(Dependency(image.bom_ref, [Dependency(c.bom_ref) for c in bom.components]))
    text = JsonV1Dot5(bom).output_as_string(indent=None)
    return canonical_json(json.loads(text))
