"""export_docker_archive: the tarball a Docker engine loads an image of the store from."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from corral.errors import StateError, UsageError
from corral.images.digests import digest_bytes, hex_of
from corral.images.export import export_docker_archive
from corral.images.store import ImageStore
from corral.spec.model import ImageSpec


def bake(tmp_path: Path) -> tuple[ImageStore, str]:
    context = tmp_path / "context"
    (context / "app").mkdir(parents=True)
    (context / "app" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (context / "app" / "run.sh").chmod(0o755)
    (context / "data.txt").write_text("data\n")
    recipe = ImageSpec.model_validate(
        {
            "copy": [{"src": "app", "dest": "/app"}, {"src": "data.txt", "dest": "/data.txt"}],
            "cmd": ["/app/run.sh"],
        }
    )
    store = ImageStore(tmp_path / "images")
    return store, store.bake("web", recipe, context).digest


def test_archive_holds_a_docker_manifest_naming_the_oci_blobs(tmp_path: Path) -> None:
    store, digest = bake(tmp_path)
    info = store.info(digest)
    out = io.BytesIO()
    export_docker_archive(store, digest, out, tag="corral/proj:abc")

    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        read = {name: tar.extractfile(m).read() for name, m in members.items() if m.isfile()}  # type: ignore[union-attr]
    manifest = json.loads(read["manifest.json"])
    assert manifest == [
        {
            "Config": f"blobs/sha256/{hex_of(info.config_digest)}",
            "RepoTags": ["corral/proj:abc"],
            "Layers": [f"blobs/sha256/{hex_of(layer)}" for layer in info.layers],
        }
    ]
    assert len(info.layers) == 2
    for path in [manifest[0]["Config"], *manifest[0]["Layers"], f"blobs/sha256/{hex_of(digest)}"]:
        assert digest_bytes(read[path]) == "sha256:" + path.rsplit("/", 1)[1]  # intact
    index = json.loads(read["index.json"])
    assert [m["digest"] for m in index["manifests"]] == [digest]
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members.values())


def test_archive_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    store, digest = bake(tmp_path)
    first = tmp_path / "one.tar"
    export_docker_archive(store, digest, first, tag="corral/proj:abc")
    os.utime(store.blobs.path(digest), (1, 1))  # nothing on disk but content matters
    second = io.BytesIO()
    export_docker_archive(store, digest, second, tag="corral/proj:abc")
    assert first.read_bytes() == second.getvalue()


def test_a_corrupted_layer_is_refused(tmp_path: Path) -> None:
    store, digest = bake(tmp_path)
    layer = store.blobs.path(store.info(digest).layers[0])
    layer.chmod(0o644)
    data = bytearray(layer.read_bytes())
    data[600] ^= 0xFF  # same size, other content
    layer.write_bytes(bytes(data))
    with pytest.raises(StateError, match="corrupted"):
        export_docker_archive(store, digest, io.BytesIO(), tag="corral/proj:abc")


def test_an_unknown_image_is_a_usage_error(tmp_path: Path) -> None:
    store, _ = bake(tmp_path)
    with pytest.raises(UsageError, match="no image"):
        export_docker_archive(store, "sha256:" + "0" * 64, io.BytesIO(), tag="x:y")
