"""Channels, revocation, garbage collection, verify, and export/import of whole images."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from corral.errors import UsageError
from corral.images import lifecycle
from corral.images.archive import import_archive
from corral.images.export import export_docker_archive
from corral.images.store import ImageStore
from corral.spec.model import ImageSpec
from tests.unit.test_images import build_context, recipe


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "home" / "images")


def bake_versions(store: ImageStore, checkout: Path, name: str, count: int) -> list[str]:
    """`count` successive digests of `name` (one changed byte each), oldest first."""
    if not checkout.exists():
        build_context(checkout)
    digests = []
    for version in range(count):
        (checkout / "VERSION").write_text(f"{version}\n")
        digests.append(store.bake(name, recipe(), checkout).digest)
    return digests


def test_channels_go_dev_then_staging_then_prod(store: ImageStore, tmp_path: Path) -> None:
    one, two = bake_versions(store, tmp_path / "c", "web", 2)
    assert lifecycle.deployable(store, "web", {}) == two  # dev: the current tag
    with pytest.raises(UsageError, match="must pass staging"):
        lifecycle.promote(store, "web", one, "prod")
    lifecycle.promote(store, "web", one, "staging")
    lifecycle.promote(store, "web", one, "prod")
    assert lifecycle.deployable(store, "web@prod", {}) == one
    assert lifecycle.deployable(store, "web@staging", {}) == one
    lifecycle.promote(store, "web", two, "staging")  # moves staging, prod stays
    assert lifecycle.channel_digest(store, "web", "staging") == two
    assert lifecycle.channel_digest(store, "web", "prod") == one
    with pytest.raises(UsageError, match="not an image of 'api'"):
        lifecycle.promote(store, "api", one, "staging")
    with pytest.raises(UsageError, match="unknown channel"):
        lifecycle.deployable(store, "web@qa", {})


def test_channels_survive_a_rebake_of_the_same_digest(store: ImageStore, tmp_path: Path) -> None:
    [one] = bake_versions(store, tmp_path / "c", "web", 1)
    lifecycle.promote(store, "web", one, "staging")
    store.bake("web", recipe(), tmp_path / "c")
    assert lifecycle.channel_digest(store, "web", "staging") == one


def test_a_revoked_image_is_refused_with_its_reason(store: ImageStore, tmp_path: Path) -> None:
    [one] = bake_versions(store, tmp_path / "c", "web", 1)
    lifecycle.promote(store, "web", one, "staging")
    lifecycle.revoke(store, one, "CVE-2026-0001 in libfoo")
    for ref in ("web", "web@staging", f"web@{one}"):
        with pytest.raises(UsageError, match="revoked: CVE-2026-0001 in libfoo") as caught:
            lifecycle.deployable(store, ref, {"web": one})
        assert caught.value.exit_code == 2
    with pytest.raises(UsageError, match="revoked"):
        lifecycle.promote(store, "web", one, "prod")
    store.bake("web", recipe(), tmp_path / "c")  # a rebake does not lift the revocation
    assert lifecycle.revoked_reason(store, one) == "CVE-2026-0001 in libfoo"
    with pytest.raises(UsageError, match="no image"):
        lifecycle.revoke(store, "sha256:" + "0" * 64, "x")


def test_gc_keeps_releases_channels_and_the_last_n(store: ImageStore, tmp_path: Path) -> None:
    digests = bake_versions(store, tmp_path / "c", "web", 6)
    lifecycle.promote(store, "web", digests[1], "staging")
    before = {e.digest for e in lifecycle.entries(store)}
    dry = lifecycle.gc(store, keep=2, in_use={digests[0]}, dry_run=True, grace=0)
    assert {e.digest for e in lifecycle.entries(store)} == before  # nothing removed
    report = lifecycle.gc(store, keep=2, in_use={digests[0]}, grace=0)
    assert (
        report.removed_entries
        == dry.removed_entries
        == [
            ("web", digests[2]),
            ("web", digests[3]),
        ]
    )
    kept = {e.digest for e in lifecycle.entries(store)}
    assert kept == {digests[0], digests[1], digests[4], digests[5]}
    for digest in kept:  # every kept image is whole: files, rootfs, manifest
        store.file_manifest(digest)
        store.rootfs(digest)
    for digest in (digests[2], digests[3]):
        assert not store.has(digest)
    assert lifecycle.verify(store).ok
    assert lifecycle.gc(store, keep=2, in_use={digests[0]}, grace=0).removed_blobs == []


def test_gc_spares_young_unreferenced_blobs(store: ImageStore, tmp_path: Path) -> None:
    bake_versions(store, tmp_path / "c", "web", 1)
    stray, _ = store.blobs.put(b"a layer a running bake has not tagged yet")
    assert lifecycle.gc(store, keep=1).removed_blobs == []
    os.utime(store.blobs.path(stray), (1, 1))
    assert lifecycle.gc(store, keep=1).removed_blobs == [stray]


def test_verify_finds_a_corrupted_blob(store: ImageStore, tmp_path: Path) -> None:
    [one] = bake_versions(store, tmp_path / "c", "web", 1)
    layer = store.blobs.path(store.info(one).layers[0])
    os.chmod(layer, 0o644)
    layer.write_bytes(layer.read_bytes()[:-1] + b"!")
    report = lifecycle.verify(store)
    assert not report.ok and report.corrupt == [store.info(one).layers[0]]
    assert lifecycle.verify(store).missing == [store.info(one).layers[0]]


def test_an_exported_image_imports_with_the_same_digest(store: ImageStore, tmp_path: Path) -> None:
    [one] = bake_versions(store, tmp_path / "c", "web", 1)
    export_docker_archive(store, one, tmp_path / "web.tar", tag="web:1")
    other = ImageStore(tmp_path / "other" / "images")
    result = import_archive(other, tmp_path / "web.tar")
    assert result.images == [("web", one)]
    assert other.resolve("web") == one and other.info(one) == store.info(one)
    listing = json.loads((other.root / "index.json").read_text())
    assert [m["digest"] for m in listing["manifests"]] == [one]


def test_stale_lists_images_whose_image_base_moved(store: ImageStore, tmp_path: Path) -> None:
    checkout = build_context(tmp_path / "c")
    base = store.bake("base", recipe(), checkout)
    parent = store.as_parent("base", "image:base")
    store.bake("web", ImageSpec.model_validate({"cmd": ["x"]}), checkout, parent=parent)
    assert not [e for e in lifecycle.entries(store) if e.stale]
    (checkout / "VERSION").write_text("2\n")
    assert store.bake("base", recipe(), checkout).digest != base.digest
    assert [e.name for e in lifecycle.entries(store) if e.stale] == ["web"]
