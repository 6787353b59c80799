"""SBOMs (CycloneDX, attached as OCI referrers) and what an export carries for an import."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from corral.images import lifecycle, sbom
from corral.images.archive import import_archive
from corral.images.export import export_docker_archive
from corral.images.recipes import bake_images
from corral.images.store import ImageStore
from corral.spec.model import ImageSpec


def checkout(tmp_path: Path, text: str = "hello\n") -> Path:
    where = tmp_path / "checkout"
    (where / "site").mkdir(parents=True, exist_ok=True)
    (where / "site" / "index.html").write_text(text)
    return where


RECIPE = {"copy": [{"src": "site", "dest": "/www"}], "cmd": ["/bin/true"]}


def bake(store: ImageStore, spec_dir: Path) -> str:
    recipes = {"web": ImageSpec.model_validate(RECIPE)}
    return bake_images(store, recipes, spec_dir).refs["web"].digest


def files_in(document: dict[str, object]) -> dict[str, str]:
    listing = next(c for c in document["components"] if c["name"] == "files")  # type: ignore[attr-defined]
    return {f["name"]: f["hashes"][0]["content"] for f in listing["components"]}


def test_every_bake_records_an_sbom_without_changing_the_digest(tmp_path: Path) -> None:
    spec_dir = checkout(tmp_path)
    store = ImageStore(tmp_path / "a" / "images")
    digest = bake(store, spec_dir)
    plain = ImageStore(tmp_path / "b" / "images")  # the store's bake alone: no SBOM
    assert plain.bake("web", ImageSpec.model_validate(RECIPE), spec_dir).digest == digest
    assert sbom.find(plain, digest) is None

    document = sbom.read(store, digest)
    assert document["bomFormat"] == "CycloneDX" and document["specVersion"] == "1.5"
    assert document["metadata"]["component"]["version"] == digest
    expected = hashlib.sha256(b"hello\n").hexdigest()
    assert files_in(document) == {"/www/index.html": expected}

    artifact = sbom.find(store, digest)
    assert artifact is not None
    manifest = json.loads(store.blobs.read(artifact))
    assert manifest["artifactType"] == sbom.MEDIA_TYPE
    assert manifest["subject"]["digest"] == digest  # an OCI 1.1 referrer of the image
    names = [ref.name for ref in store.list()]
    assert names == ["web"]  # the artifact is not an image of the listing
    assert bake(store, spec_dir) == digest and sbom.find(store, digest) == artifact


def test_the_same_image_gets_the_same_sbom_bytes(tmp_path: Path) -> None:
    spec_dir = checkout(tmp_path)
    one, two = ImageStore(tmp_path / "1" / "images"), ImageStore(tmp_path / "2" / "images")
    digest = bake(one, spec_dir)
    assert bake(two, spec_dir) == digest
    assert sbom.find(one, digest) == sbom.find(two, digest)


def test_an_export_carries_the_file_manifest_and_the_sbom(tmp_path: Path) -> None:
    spec_dir = checkout(tmp_path)
    store = ImageStore(tmp_path / "a" / "images")
    digest = bake(store, spec_dir)
    export_docker_archive(store, digest, tmp_path / "web.tar", tag="web:1")
    other = ImageStore(tmp_path / "b" / "images")
    imported = import_archive(other, tmp_path / "web.tar")
    assert imported.images == [("web", digest)]
    assert other.file_manifest(digest) == store.file_manifest(digest)  # for the auditor
    assert sbom.read(other, digest) == sbom.read(store, digest)


def test_gc_removes_an_sbom_with_its_image_only(tmp_path: Path) -> None:
    spec_dir = checkout(tmp_path)
    store = ImageStore(tmp_path / "a" / "images")
    first = bake(store, spec_dir)
    (spec_dir / "site" / "index.html").write_text("v2\n")
    second = bake(store, spec_dir)
    assert sbom.find(store, first) and sbom.find(store, second)
    report = lifecycle.gc(store, keep=1, grace=0)
    assert report.removed_entries == [("web", first)]
    assert sbom.find(store, first) is None
    assert files_in(sbom.read(store, second)) == {
        "/www/index.html": hashlib.sha256(b"v2\n").hexdigest()
    }
    assert lifecycle.verify(store).ok
