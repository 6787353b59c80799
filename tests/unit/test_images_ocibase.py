"""`from: oci:<path>@sha256:…`: golden bases made elsewhere, as an OCI layout or archive."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from corral.errors import BakeError, MissingFileError, UsageError
from corral.images.recipes import bake_images
from corral.images.store import ImageStore
from corral.spec.model import ImageSpec


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _foreign_layer() -> bytes:
    """A gzip layer as other tools write it: mtimes, a hard link, a device."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, kind in (("etc", tarfile.DIRTYPE), ("bin", tarfile.DIRTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, 0o755, 1_700_000_000
            tar.addfile(info)
        motd = b"golden\n"
        info = tarfile.TarInfo("etc/motd")
        info.size, info.mode, info.mtime = len(motd), 0o644, 1_700_000_000
        tar.addfile(info, io.BytesIO(motd))
        link = tarfile.TarInfo("etc/motd.copy")
        link.type, link.linkname, link.mode = tarfile.LNKTYPE, "etc/motd", 0o644
        tar.addfile(link)
        device = tarfile.TarInfo("dev/null")
        device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
        tar.addfile(device)
    return gzip.compress(raw.getvalue(), mtime=0)


def make_layout(layout: Path) -> str:
    """An OCI image layout with one gzip layer; the manifest digest."""
    layer = _blob(layout, _foreign_layer())
    config = _blob(
        layout,
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": ["GOLDEN=1"], "Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": []},
            }
        ).encode(),
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
        }
    ).encode()
    entry = _blob(layout, manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    described = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **entry}
    index = {"schemaVersion": 2, "manifests": [described]}
    (layout / "index.json").write_text(json.dumps(index))
    return str(entry["digest"])


def archive(layout: Path, out: Path) -> Path:
    with tarfile.open(out, "w") as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(layout)), recursive=False)
    return out


def bake(store: ImageStore, spec_dir: Path, base: str) -> str:
    recipe = ImageSpec.model_validate(
        {"from": f"oci:{base}", "copy": [{"src": "app.txt", "dest": "/app/app.txt"}]}
    )
    return bake_images(store, {"app": recipe}, spec_dir).refs["app"].digest


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    where = tmp_path / "checkout"
    where.mkdir()
    (where / "app.txt").write_text("app\n")
    return where


def test_a_layout_and_its_archive_are_bases_with_one_digest(tmp_path: Path, spec_dir: Path) -> None:
    digest = make_layout(spec_dir / "golden")
    archive(spec_dir / "golden", spec_dir / "golden.tar")
    store = ImageStore(tmp_path / "a" / "images")
    from_dir = bake(store, spec_dir, f"golden@{digest}")
    from_tar = bake(ImageStore(tmp_path / "b" / "images"), spec_dir, f"golden.tar@{digest}")
    assert from_dir != from_tar  # the base's label (its path) is part of the image

    files = {e.path: e for e in store.file_manifest(from_dir)}
    assert files["etc/motd"].sha256 == hashlib.sha256(b"golden\n").hexdigest()
    assert files["etc/motd.copy"].type == "file"  # a hard link became a file
    assert files["app/app.txt"].size == 4
    assert files["dev"].type == "dir" and "dev/null" not in files  # devices dropped
    assert store.info(from_dir).env == {"GOLDEN": "1"}
    assert store.base_of(from_dir) == f"oci:golden@{digest}"
    root = store.rootfs(from_dir)
    assert (root / "etc" / "motd.copy").read_text() == "golden\n"
    # another checkout, another store: the same image
    assert bake(ImageStore(tmp_path / "c" / "images"), spec_dir, f"golden@{digest}") == from_dir


def test_the_digest_is_required_and_checked(tmp_path: Path, spec_dir: Path) -> None:
    digest = make_layout(spec_dir / "golden")
    store = ImageStore(tmp_path / "images")
    with pytest.raises(UsageError, match=digest):  # names what to pin
        bake(store, spec_dir, "golden")
    with pytest.raises(UsageError, match="holds no blob"):
        bake(store, spec_dir, "golden@sha256:" + "0" * 64)
    with pytest.raises(MissingFileError):
        bake(store, spec_dir, f"nowhere.tar@{digest}")
    with pytest.raises(UsageError, match="absolute"):
        bake(store, spec_dir, f"{spec_dir / 'golden'}@{digest}")


def test_a_corrupted_layer_stops_the_bake(tmp_path: Path, spec_dir: Path) -> None:
    digest = make_layout(spec_dir / "golden")
    manifest = json.loads((spec_dir / "golden" / "blobs" / "sha256" / digest[7:]).read_text())
    layer = spec_dir / "golden" / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    raw = bytearray(gzip.decompress(layer.read_bytes()))
    raw[raw.index(b"golden\n")] = ord("G")
    layer.write_bytes(gzip.compress(bytes(raw), mtime=0))
    with pytest.raises(BakeError, match="corrupted"):
        bake(ImageStore(tmp_path / "images"), spec_dir, f"golden@{digest}")


def test_packages_need_a_debian_base(tmp_path: Path, spec_dir: Path) -> None:
    digest = make_layout(spec_dir / "golden")
    recipe = ImageSpec.model_validate({"from": f"oci:golden@{digest}", "packages": ["curl"]})
    with pytest.raises(UsageError, match=r"images\.app\.packages: only a `debian:<suite>`"):
        bake_images(ImageStore(tmp_path / "images"), {"app": recipe}, spec_dir)
