"""`from: debian:bookworm` with `packages:`: mmdebstrap, pinned by corral.lock, reproducible.

These download Debian packages from the machine's configured mirror, so they are `slow`: the
base is resolved and built once per session (one small package set), and the other tests
rebuild it from the .debs that session kept, with no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.errors import BakeError, UsageError
from corral.images import bases, sbom
from corral.images.archive import export_bases, import_archive
from corral.images.lockfile import lock_path, read_lock
from corral.images.recipes import bake_images
from corral.images.store import ImageStore
from corral.spec.model import ImageSpec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RECIPE = {"from": "debian:bookworm", "packages": ["hello"], "run": ["hello > /greeting"]}
KEY = "debian:bookworm[hello]"


@dataclass(frozen=True)
class Baked:
    store: ImageStore
    checkout: Path
    digest: str


def recipes() -> dict[str, ImageSpec]:
    return {"app": ImageSpec.model_validate(RECIPE)}


@pytest.fixture(scope="session")
def baked(tmp_path_factory: pytest.TempPathFactory) -> Baked:
    """The session's one resolution and bake (its .debs stay in its store)."""
    if shutil.which("mmdebstrap") is None or shutil.which("bwrap") is None:
        pytest.skip("needs mmdebstrap and bubblewrap (apt-get install -y mmdebstrap bubblewrap)")
    root = tmp_path_factory.mktemp("debian")
    checkout = root / "checkout"
    checkout.mkdir()
    store = ImageStore(root / "home" / "images")
    try:
        digest = bake_images(store, recipes(), checkout).refs["app"].digest
    except BakeError as exc:
        pytest.skip(f"the Debian mirror is not reachable: {exc}")
    return Baked(store, checkout, digest)


def store_with_debs(root: Path, source: ImageStore, checkout: Path) -> ImageStore:
    """A new store holding only the pinned .debs: `corral image export --bases` there,
    `corral image import bases.tar` here."""
    archive = root / "bases.tar"
    root.mkdir(parents=True, exist_ok=True)
    export_bases(source, list(read_lock(lock_path(checkout)).values()), archive)
    store = ImageStore(root / "images")
    assert len(import_archive(store, archive).bases) == len(list(bases.bases_dir(source).iterdir()))
    return store


def test_the_lock_pins_every_package_with_its_version_and_sha256(baked: Baked) -> None:
    lock = json.loads(lock_path(baked.checkout).read_text())
    pinned = lock["bases"][KEY]
    assert pinned["suite"] == "bookworm" and pinned["include"] == ["hello"]
    packages = {p["package"]: p for p in pinned["packages"]}
    assert {"hello", "libc6", "dpkg", "base-files"} <= set(packages)
    for package in packages.values():
        deb = bases.bases_dir(baked.store) / f"{package['sha256']}.deb"
        assert hashlib.sha256(deb.read_bytes()).hexdigest() == package["sha256"]
        assert package["version"] and package["architecture"] in ("amd64", "arm64", "all")
    files = {e.path: e for e in baked.store.file_manifest(baked.digest)}
    assert files["usr/bin/hello"].type == "file" and files["greeting"].size > 0
    assert files["bin"].type == "symlink"  # a merged-/usr Debian root
    assert files["dev"].type == "dir" and not any(p.startswith("dev/") for p in files)
    document = sbom.read(baked.store, baked.digest)
    purls = {c.get("purl") for c in document["components"]}
    assert f"pkg:deb/debian/hello@{packages['hello']['version']}?arch=amd64" in purls


def test_exported_bases_rebuild_the_same_digest_in_another_directory_and_umask(
    baked: Baked, tmp_path: Path
) -> None:
    other = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(baked.checkout, other)
    store = store_with_debs(tmp_path / "home", baked.store, baked.checkout)
    old = os.umask(0o077)
    try:
        again = bake_images(store, recipes(), other).refs["app"].digest
    finally:
        os.umask(old)
    assert again == baked.digest


def test_a_pinned_version_the_archive_no_longer_offers_is_a_clear_error(
    baked: Baked, tmp_path: Path
) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(baked.checkout, checkout)
    lock = lock_path(checkout)
    data = json.loads(lock.read_text())
    hello = next(p for p in data["bases"][KEY]["packages"] if p["package"] == "hello")
    hello |= {"version": "0.0-gone-from-debian", "sha256": "0" * 64}
    lock.write_text(json.dumps(data))
    store = store_with_debs(tmp_path / "home", baked.store, baked.checkout)
    with pytest.raises(UsageError) as caught:
        bake_images(store, recipes(), checkout)
    assert "hello 0.0-gone-from-debian" in caught.value.message
    assert "--update-bases" in (caught.value.hint or "") and "import" in (caught.value.hint or "")
    assert json.loads(lock.read_text()) == data  # never re-resolved silently
