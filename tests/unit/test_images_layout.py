"""The store is a valid OCI image layout, its bytes are pinned, and OCI tools accept it."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from corral.images import EPOCH, ImageStore
from corral.images.digests import canonical_json
from corral.spec.model import ImageSpec
from tests.unit.test_images import build_context, recipe


@pytest.fixture
def baked(tmp_path: Path) -> tuple[ImageStore, str]:
    store = ImageStore(tmp_path / "home" / "images")
    return store, store.bake("web", recipe(), build_context(tmp_path / "checkout")).digest


def read_blob(layout: Path, descriptor: dict[str, Any]) -> bytes:
    """A blob named by `descriptor`, after checking its digest and size."""
    algorithm, hexdigest = descriptor["digest"].split(":")
    assert algorithm == "sha256"
    data: bytes = (layout / "blobs" / "sha256" / hexdigest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hexdigest
    assert len(data) == descriptor["size"]
    return data


def read_json(layout: Path, descriptor: dict[str, Any], media_type: str) -> dict[str, Any]:
    data = read_blob(layout, descriptor)
    document: dict[str, Any] = json.loads(data)
    assert canonical_json(document) == data  # canonical: stable bytes
    assert descriptor["mediaType"] == media_type
    return document


def test_index_manifest_config_and_layers_all_check_out(baked: tuple[ImageStore, str]) -> None:
    store, digest = baked
    layout = store.root
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "web"
    assert entry["digest"] == digest

    manifest = read_json(layout, entry, "application/vnd.oci.image.manifest.v1+json")
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == entry["mediaType"]
    config = read_json(layout, manifest["config"], "application/vnd.oci.image.config.v1+json")
    assert config["os"] == "linux" and config["architecture"] == store.architecture
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert "history" not in config
    assert config["config"] == {
        "Env": ["A=1", "B=2"],
        "Cmd": ["python3", "server.py"],
        "WorkingDir": "/app",
    }
    diff_ids = []
    for layer in manifest["layers"]:
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
        diff_ids.append("sha256:" + hashlib.sha256(read_blob(layout, layer)).hexdigest())
    assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}

    files = manifest["annotations"]["io.corral.files"]
    listing = json.loads((layout / "blobs" / "sha256" / files[7:]).read_bytes())
    assert hashlib.sha256(canonical_json(listing)).hexdigest() == files[7:]


def test_layers_are_normalised_tars(baked: tuple[ImageStore, str]) -> None:
    store, digest = baked
    layer = store.blobs.path(store.info(digest).layers[0])
    with tarfile.open(layer) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:3] == ["app", "app/current", "app/empty"]  # directories are entries too
    for member in members:
        assert (member.mtime, member.uid, member.gid) == (EPOCH, 0, 0)
        assert (member.uname, member.gname) == ("", "")
        assert set(member.pax_headers) <= {"path"}  # no atime/ctime/device extras
    modes = {m.name: (m.type, m.mode) for m in members}
    assert modes["app"] == (tarfile.DIRTYPE, 0o755)
    assert modes["app/run.sh"] == (tarfile.REGTYPE, 0o755)
    assert modes["app/server.py"] == (tarfile.REGTYPE, 0o644)
    assert modes["app/current"] == (tarfile.SYMTYPE, 0o777)
    assert "app/static/" + "l" * 120 in modes
    assert "app/static/ünïcode.txt" in modes


def pinned_context(root: Path) -> Path:
    """Files whose modes are already normalised, so GNU tar stores them as corral does."""
    (root / "opt" / "bin").mkdir(parents=True)
    for directory in (root / "opt", root / "opt" / "bin"):
        directory.chmod(0o755)
    (root / "opt" / "bin" / "serve").write_text("#!/bin/sh\necho ok\n")
    (root / "opt" / "bin" / "serve").chmod(0o755)
    (root / "opt" / "bin" / "README").write_text("hello\n")
    (root / "opt" / "bin" / "README").chmod(0o644)
    (root / "opt" / "bin" / "latest").symlink_to("serve")
    return root


PINNED_SPEC = {"copy": [{"src": "opt/bin", "dest": "/opt/bin"}], "env": {"PORT": "8080"}}
PINNED_LAYER = "sha256:b8e10f31ee184929ccdea5844fa44fe138e0955561e9b420d698fa49b97e04bd"
PINNED_IMAGE = "sha256:fd9a66e3cb9b9b52bffc70b3936b26550d1534c31602673a03873f355524568e"


def test_digests_are_pinned_across_days_and_versions(tmp_path: Path) -> None:
    """Law 2 over time: these digests must never change silently.

    If this fails because the layer or config format changed on purpose, bump LAYER_FORMAT
    and say so in the changelog: every image digest users have recorded changes with it.
    """
    spec = ImageSpec.model_validate({**PINNED_SPEC, "cmd": ["serve"]})
    store = ImageStore(tmp_path / "images", architecture="amd64")
    ref = store.bake("pinned", spec, pinned_context(tmp_path / "ctx"))
    assert store.info(ref.digest).layers == [PINNED_LAYER]
    assert ref.digest == PINNED_IMAGE


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
def test_a_layer_is_byte_identical_to_gnu_tar_ustar(tmp_path: Path) -> None:
    """An independent writer, given the same normalisation, produces the very same bytes."""
    context = pinned_context(tmp_path / "ctx")
    gnu = tmp_path / "gnu.tar"
    result = run_tool(
        "tar", "--format=ustar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0",
        "--numeric-owner", "--blocking-factor=1", "-C", str(context), "-cf", str(gnu), "opt",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    store = ImageStore(tmp_path / "images")
    ref = store.bake("gnu", ImageSpec.model_validate(PINNED_SPEC), context)
    [layer] = store.info(ref.digest).layers
    assert store.blobs.path(layer).read_bytes() == gnu.read_bytes()


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_reads_the_image_with_the_same_digest(
    baked: tuple[ImageStore, str], tmp_path: Path
) -> None:
    store, first = baked
    # A re-baked name: skopeo must find the current digest, not the superseded one.
    ref = store.bake("web", recipe(cmd=["python3", "-u", "server.py"]), tmp_path / "checkout")
    digest = ref.digest
    assert digest != first
    result = run_tool("skopeo", "inspect", f"oci:{store.root}:web")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["Digest"] == digest
    assert seen["Layers"] == store.info(digest).layers
    assert seen["Env"] == ["A=1", "B=2"]


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed")
def test_umoci_unpacks_the_same_files_as_rootfs(
    baked: tuple[ImageStore, str], tmp_path: Path
) -> None:
    store, digest = baked
    bundle = tmp_path / "bundle"
    result = run_tool("umoci", "unpack", "--rootless", "--image", f"{store.root}:web", str(bundle))
    assert result.returncode == 0, result.stderr

    def tree(root: Path) -> dict[str, tuple[int, bytes | str | None]]:
        out: dict[str, tuple[int, bytes | str | None]] = {}
        for path in sorted(root.rglob("*")):
            st = path.lstat()
            content: bytes | str | None = None
            if path.is_symlink():
                content = str(path.readlink())
            elif path.is_file():
                content = path.read_bytes()
            out[path.relative_to(root).as_posix()] = (st.st_mode, content)
        return out

    assert tree(bundle / "rootfs") == tree(store.rootfs(digest))
