"""The recipe language: busybox base pinned by corral.lock, copy mode/owner, run steps under
bubblewrap, layered `image:` bases, epoch, and `bake --check`.

The busybox .deb is fetched once per test session (`apt-get download`); every test then works
in its own store and checkout, with its own lock, so Debian's next update cannot turn it red.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.errors import BakeError, SpecError, UsageError
from corral.images import bases
from corral.images.bases import BasePin
from corral.images.lockfile import lock_path, read_lock, write_lock
from corral.images.recipes import bake_images, bake_order, check_reproducible
from corral.images.store import ImageStore
from corral.spec.load import load_spec
from corral.spec.model import ImageSpec


@pytest.fixture(scope="session")
def busybox_deb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BasePin]:
    """The busybox-static .deb and its pin, resolved once for the whole session."""
    if shutil.which("apt-get") is None or shutil.which("bwrap") is None:
        pytest.skip("needs apt-get and bubblewrap")
    store = ImageStore(tmp_path_factory.mktemp("bases") / "images")
    try:
        pin = bases.resolve(store)
    except BakeError as exc:
        pytest.skip(f"the Debian archive is not reachable: {exc}")
    return bases.deb_path(store, pin), pin


@pytest.fixture
def spec_dir(tmp_path: Path, busybox_deb: tuple[Path, BasePin]) -> Path:
    """A checkout with a lock pinning the session's busybox."""
    checkout = tmp_path / "checkout"
    (checkout / "files").mkdir(parents=True)
    (checkout / "files" / "a.txt").write_text("alpha\n")
    (checkout / "files" / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    write_lock(lock_path(checkout), {"busybox": busybox_deb[1]})
    return checkout


def new_store(root: Path, busybox_deb: tuple[Path, BasePin]) -> ImageStore:
    """An empty store that already holds the pinned .deb (as after `corral image import`)."""
    store = ImageStore(root / "images")
    bases.import_deb(store, busybox_deb[0])
    return store


@pytest.fixture
def store(tmp_path: Path, busybox_deb: tuple[Path, BasePin]) -> ImageStore:
    return new_store(tmp_path / "home", busybox_deb)


def images(**recipes: dict[str, Any]) -> dict[str, ImageSpec]:
    return {name: ImageSpec.model_validate(data) for name, data in recipes.items()}


def files_of(store: ImageStore, digest: str) -> dict[str, Any]:
    return {e.path: e for e in store.file_manifest(digest)}


APP = {
    "from": "busybox",
    "copy": [{"src": "files", "dest": "/app"}],
    "run": ["echo built > /app/built.txt", "rm /bin/vi", "mkdir -p /var/www"],
    "cmd": ["httpd", "-f"],
}


def test_a_busybox_image_has_its_own_os_and_the_steps_changes(
    store: ImageStore, spec_dir: Path
) -> None:
    ref = bake_images(store, images(app=APP), spec_dir).refs["app"]
    files = files_of(store, ref.digest)
    assert files["bin/busybox"].type == "file" and files["bin/sh"].target == "/bin/busybox"
    assert files["app/built.txt"].size == len("built\n")
    assert "bin/vi" not in files  # the rm became a whiteout
    assert files["var/www"].type == "dir"
    for mount in ("proc", "dev", "tmp"):  # a read-only root needs them (local driver)
        assert files[mount].type == "dir"
    info = store.info(ref.digest)
    assert info.has_os and info.cmd == ["httpd", "-f"]
    root = store.rootfs(ref.digest)
    assert (root / "app" / "built.txt").read_text() == "built\n"
    assert not (root / "bin" / "vi").exists() and not (root / "bin" / "vi").is_symlink()
    assert (
        store.base_of(ref.digest)
        == f"busybox@sha256:{read_lock(lock_path(spec_dir))['busybox'].sha256}"
    )


def test_same_recipe_same_digest_in_another_checkout_store_and_umask(
    tmp_path: Path, spec_dir: Path, busybox_deb: tuple[Path, BasePin]
) -> None:
    first = bake_images(new_store(tmp_path / "a", busybox_deb), images(app=APP), spec_dir)
    other = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(spec_dir, other)
    for path in other.rglob("*"):
        os.utime(path, (1, 1))
    old = os.umask(0o077)
    try:
        second = bake_images(new_store(tmp_path / "b", busybox_deb), images(app=APP), other)
    finally:
        os.umask(old)
    assert first.refs["app"].digest == second.refs["app"].digest
    (other / "files" / "a.txt").write_text("alphA\n")
    third = bake_images(new_store(tmp_path / "c", busybox_deb), images(app=APP), other)
    assert third.refs["app"].digest != first.refs["app"].digest


def test_a_warm_bake_does_not_run_the_steps_again(store: ImageStore, spec_dir: Path) -> None:
    # The step is not deterministic: only the cache can give the same digest twice.
    recipe = images(app={"from": "busybox", "run": ["cat /proc/sys/kernel/random/uuid > /id"]})
    first = bake_images(store, recipe, spec_dir).refs["app"].digest
    assert bake_images(store, recipe, spec_dir).refs["app"].digest == first
    shutil.rmtree(store.root / "cache")
    assert bake_images(store, recipe, spec_dir).refs["app"].digest != first


def test_a_changed_file_reruns_the_steps_after_it(store: ImageStore, spec_dir: Path) -> None:
    recipe = images(
        app={
            "from": "busybox",
            "copy": [{"src": "files", "dest": "/app"}],
            "run": ["cat /app/a.txt > /copy.txt"],
        }
    )
    bake_images(store, recipe, spec_dir)
    (spec_dir / "files" / "a.txt").write_text("beta\n")
    ref = bake_images(store, recipe, spec_dir).refs["app"]
    assert (store.rootfs(ref.digest) / "copy.txt").read_text() == "beta\n"


def test_a_failing_step_shows_its_output_and_stores_nothing(
    store: ImageStore, spec_dir: Path
) -> None:
    good = images(app={"from": "busybox", "run": ["echo ok > /ok"]})
    bake_images(store, good, spec_dir)
    index_before = (store.root / "index.json").read_bytes()
    cache_before = sorted(p.name for p in (store.root / "cache" / "layers").iterdir())
    bad = images(app={"from": "busybox", "run": ["echo ok > /ok", "echo ouch >&2; exit 3"]})
    bad["app"] = bad["app"].model_copy(update={"run": ["echo new > /new", "echo ouch >&2; exit 3"]})
    with pytest.raises(BakeError) as caught:
        bake_images(store, bad, spec_dir)
    assert "exit status 3" in caught.value.message and "ouch" in caught.value.message
    assert (store.root / "index.json").read_bytes() == index_before
    assert sorted(p.name for p in (store.root / "cache" / "layers").iterdir()) == cache_before
    assert not list((store.root / "tmp").glob("run-*"))  # the workspace is gone


def test_steps_have_no_network(store: ImageStore, spec_dir: Path) -> None:
    # In a network namespace of its own the step sees the loopback device only.
    step = "tail -n +3 /proc/net/dev | grep -v 'lo:' > /devices; cat /devices; test ! -s /devices"
    ref = bake_images(store, images(app={"from": "busybox", "run": [step]}), spec_dir).refs
    assert (store.rootfs(ref["app"].digest) / "devices").read_text() == ""


def test_image_bases_layer_and_bake_first(store: ImageStore, spec_dir: Path) -> None:
    recipe = images(
        web={"from": "image:base", "run": ["cat /base.txt > /web.txt"], "env": {"B": "2"}},
        base={
            "from": "busybox",
            "run": ["echo base > /base.txt"],
            "env": {"A": "1"},
            "workdir": "/srv",
            "cmd": ["sh"],
        },
    )
    assert bake_order(recipe) == ["base", "web"]
    refs = bake_images(store, recipe, spec_dir).refs
    web = store.info(refs["web"].digest)
    base = store.info(refs["base"].digest)
    assert web.layers[: len(base.layers)] == base.layers
    assert web.env["A"] == "1" and web.env["B"] == "2"  # inherited and added
    assert web.workdir == "/srv" and web.cmd == ["sh"] and web.has_os
    assert (store.rootfs(refs["web"].digest) / "web.txt").read_text() == "base\n"
    assert store.base_of(refs["web"].digest) == f"image:base@{refs['base'].digest}"


def test_cycles_and_unknown_bases_are_clear_errors() -> None:
    with pytest.raises(UsageError, match=r"cycle \(a → b → a\)"):
        bake_order(images(a={"from": "image:b"}, b={"from": "image:a"}))
    with pytest.raises(UsageError, match="no image named 'nope'"):
        bake_order(images(a={"from": "image:nope"}))


def test_copy_mode_owner_and_epoch_go_into_the_tar(store: ImageStore, spec_dir: Path) -> None:
    recipe = images(
        app={
            "copy": [{"src": "files", "dest": "/app", "mode": "0600", "owner": "1000:50"}],
            "epoch": 1_700_000_000,
        }
    )
    ref = bake_images(store, recipe, spec_dir).refs["app"]
    layer = store.info(ref.digest).layers[0]
    with tarfile.open(fileobj=io.BytesIO(store.blobs.read(layer))) as tar:
        member = tar.getmember("app/a.txt")
        directory = tar.getmember("app")
    assert (member.mode, member.uid, member.gid) == (0o600, 1000, 50)
    assert member.mtime == 1_700_000_000 and directory.mode == 0o755
    config = json.loads(store.blobs.read(store.info(ref.digest).config_digest))
    assert config["created"] == "2023-11-14T22:13:20Z"


def test_the_lock_is_used_and_only_update_bases_moves_it(
    store: ImageStore, spec_dir: Path, busybox_deb: tuple[Path, BasePin]
) -> None:
    lock = lock_path(spec_dir)
    old = BasePin("busybox-static", "1:0.0-gone", "amd64", "0" * 64)
    write_lock(lock, {"busybox": old})
    with pytest.raises(UsageError) as caught:  # not offered, not in the store
        bake_images(store, images(app={"from": "busybox"}), spec_dir)
    assert "1:0.0-gone" in caught.value.message
    assert "--update-bases" in (caught.value.hint or "") and "import" in (caught.value.hint or "")
    assert read_lock(lock) == {"busybox": old}  # never re-resolved silently
    result = bake_images(store, images(app={"from": "busybox"}), spec_dir, update_bases=True)
    assert result.lock_changed and read_lock(lock)["busybox"].sha256 == busybox_deb[1].sha256


def test_exported_bases_import_and_bake_the_same_image_elsewhere(
    tmp_path: Path, store: ImageStore, spec_dir: Path, busybox_deb: tuple[Path, BasePin]
) -> None:
    from corral.images.archive import export_bases, import_archive

    pin = busybox_deb[1]
    export_bases(store, [pin], tmp_path / "bases.tar")
    other = ImageStore(tmp_path / "other" / "images")
    imported = import_archive(other, tmp_path / "bases.tar")
    assert imported.bases == [pin]
    first = bake_images(store, images(app={"from": "busybox"}), spec_dir).refs["app"].digest
    assert bake_images(other, images(app={"from": "busybox"}), spec_dir).refs["app"].digest == first


def test_bake_check_names_the_files_that_differ(store: ImageStore, spec_dir: Path) -> None:
    recipe = images(
        stable={"from": "busybox", "run": ["echo same > /same"]},
        noisy={"from": "busybox", "run": ["cat /proc/sys/kernel/random/uuid > /id; echo x > /x"]},
    )
    bake_images(store, recipe, spec_dir)
    found = {d.image: d for d in check_reproducible(store, recipe, spec_dir)}
    assert found["stable"].reproducible and found["stable"].files == []
    assert not found["noisy"].reproducible and found["noisy"].files == ["id"]


def test_run_needs_a_shell(store: ImageStore, spec_dir: Path) -> None:
    with pytest.raises(BakeError, match="no /bin/sh"):
        bake_images(store, images(app={"run": ["true"]}), spec_dir)


@pytest.fixture
def spec_file(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "corral.yaml"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("images:\n  a:\n    from: ubuntu\n", ":3:"),
        (
            "images:\n  a:\n    copy:\n      - src: x\n        dest: /x\n        mode: '0999'\n",
            ":6:",
        ),
        (
            "images:\n  a:\n    copy:\n      - src: x\n        dest: /x\n        owner: root\n",
            ":6:",
        ),
        ("images:\n  a:\n    run: echo\n", ":3:"),
        ("images:\n  a:\n    epoch: -1\n", ":3:"),
    ],
)
def test_recipe_errors_point_at_their_line(spec_file: Path, text: str, where: str) -> None:
    spec_file.write_text(text)
    (spec_file.parent / "x").write_text("x")
    with pytest.raises(SpecError) as caught:
        load_spec(spec_file)
    assert where in str(caught.value)


def test_a_mode_is_read_as_chmod_reads_it() -> None:
    for given in (644, "0644", "644", "0o644"):
        step = ImageSpec.model_validate({"copy": [{"src": "a", "dest": "/a", "mode": given}]})
        assert step.copy_[0].mode == 0o644


def test_an_image_on_an_older_busybox_pin_is_stale(store: ImageStore, spec_dir: Path) -> None:
    from corral.images.lifecycle import entries

    bake_images(store, images(app={"from": "busybox"}), spec_dir)
    pin = read_lock(lock_path(spec_dir))["busybox"]
    assert not [e for e in entries(store, {"busybox": f"busybox@sha256:{pin.sha256}"}) if e.stale]
    moved = {"busybox": "busybox@sha256:" + "1" * 64}  # the lock re-resolved since
    assert [e.name for e in entries(store, moved) if e.stale] == ["app"]
