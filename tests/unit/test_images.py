"""The image store: law 2 (content addressing), the layer cache, tags, rootfs, corruption."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.errors import BakeError, MissingFileError, StateError, UsageError
from corral.images import EPOCH, FileEntry, ImageStore
from corral.images.context import scan_copy
from corral.images.tarball import write_layer
from corral.spec.model import CopyStep, ImageSpec

LONG_NAME = "l" * 120  # needs a pax header: longer than ustar's 100 bytes


def build_context(root: Path, *, umask: int = 0o022, mtime: float = 1_000_000_000) -> Path:
    """A small app checkout, created under `umask`, every path's mtime set to `mtime`."""
    old = os.umask(umask)
    try:
        app = root / "app"
        (app / "static").mkdir(parents=True)
        (app / "empty").mkdir()
        (app / "server.py").write_text("print('hello')\n")
        (app / "static" / "index.html").write_text("<h1>hi</h1>\n")
        (app / "static" / "ünïcode.txt").write_text("unicode\n")
        (app / "static" / LONG_NAME).write_text("long\n")
        run = app / "run.sh"
        run.write_text("#!/bin/sh\nexec python3 server.py\n")
        run.chmod(run.stat().st_mode | 0o100)  # owner exec only: the umask decides the rest
        (app / "current").symlink_to("server.py")
        (root / "VERSION").write_text("1.0\n")
    finally:
        os.umask(old)
    for path in [root, *root.rglob("*")]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return root


def recipe(**overrides: Any) -> ImageSpec:
    data: dict[str, Any] = {
        "copy": [{"src": "app", "dest": "/app"}, {"src": "VERSION", "dest": "/etc/app/"}],
        "env": {"B": "2", "A": "1"},
        "workdir": "/app",
        "cmd": ["python3", "server.py"],
    }
    data.update(overrides)
    return ImageSpec.model_validate(data)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    return build_context(tmp_path / "checkout")


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "home" / "images")


@pytest.fixture
def layer_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every layer tar the store writes (wrapping the real writer)."""
    written: list[str] = []

    def counting(layer: Any, out: Any) -> None:
        written.append(layer.dest)
        write_layer(layer, out)

    monkeypatch.setattr("corral.images.store.write_layer", counting)
    return written


def layer_paths(store: ImageStore, digest: str) -> list[Path]:
    return [store.blobs.path(layer) for layer in store.info(digest).layers]


# -- law 2: the digest is a function of recipe and content only ---------------------------


def test_same_inputs_give_the_same_digest_anywhere_under_any_umask_and_mtime(
    tmp_path: Path,
) -> None:
    first = build_context(tmp_path / "a" / "checkout", umask=0o022, mtime=1_000_000_000)
    second = build_context(tmp_path / "b" / "x" / "other", umask=0o077, mtime=1_700_000_000)
    assert (second / "app" / "server.py").stat().st_mode & 0o777 == 0o600  # umask did apply
    one = ImageStore(tmp_path / "home1" / "images").bake("web", recipe(), first)
    two = ImageStore(tmp_path / "home2" / "images").bake("web", recipe(), second)
    assert one.digest == two.digest
    assert one.config_digest == two.config_digest
    assert one.created_from == two.created_from  # no absolute path of the checkout leaks


def test_the_name_is_a_tag_not_part_of_the_digest(store: ImageStore, context: Path) -> None:
    assert (
        store.bake("web", recipe(), context).digest == store.bake("api", recipe(), context).digest
    )


def test_one_changed_byte_changes_the_digest(store: ImageStore, context: Path) -> None:
    before = store.bake("web", recipe(), context)
    (context / "app" / "server.py").write_text("print('hellp')\n")
    assert store.bake("web", recipe(), context).digest != before.digest


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda ctx: (ctx / "app" / "server.py").chmod(0o755), id="exec-bit"),
        pytest.param(
            lambda ctx: (ctx / "app" / "server.py").rename(ctx / "app" / "main.py"), id="rename"
        ),
        pytest.param(lambda ctx: (ctx / "app" / "new").mkdir(), id="new-empty-dir"),
        pytest.param(
            lambda ctx: (
                (ctx / "app" / "current").unlink(),
                (ctx / "app" / "current").symlink_to("run.sh"),
            ),
            id="symlink-target",
        ),
    ],
)
def test_any_change_to_what_the_image_holds_changes_the_digest(
    store: ImageStore, context: Path, change: Callable[[Path], object]
) -> None:
    before = store.bake("web", recipe(), context).digest
    change(context)
    assert store.bake("web", recipe(), context).digest != before


@pytest.mark.parametrize(
    "overrides",
    [
        {"env": {"A": "1", "B": "3"}},
        {"env": {"A": "1"}},
        {"cmd": ["python3", "-u", "server.py"]},
        {"workdir": "/"},
        {"copy": [{"src": "app", "dest": "/srv"}, {"src": "VERSION", "dest": "/etc/app/"}]},
    ],
    ids=["env-value", "env-key", "cmd", "workdir", "dest"],
)
def test_a_changed_recipe_changes_the_digest(
    store: ImageStore, context: Path, overrides: dict[str, Any]
) -> None:
    before = store.bake("web", recipe(), context).digest
    assert store.bake("web", recipe(**overrides), context).digest != before


def test_env_order_does_not_matter(store: ImageStore, context: Path) -> None:
    one = store.bake("web", recipe(env={"A": "1", "B": "2"}), context)
    two = store.bake("web", recipe(env={"B": "2", "A": "1"}), context)
    assert one.digest == two.digest
    assert store.info(one.digest).env == {"A": "1", "B": "2"}


# -- layer cache --------------------------------------------------------------------------


def test_a_warm_bake_reuses_every_layer_without_rewriting_it(
    store: ImageStore, context: Path, layer_writes: list[str]
) -> None:
    first = store.bake("web", recipe(), context)
    assert layer_writes == ["/app", "/etc/app/"]
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in layer_paths(store, first.digest)]
    os.utime(context / "app" / "server.py", (5, 5))  # a touched file is not a changed file
    second = store.bake("web", recipe(), context)
    assert second.digest == first.digest
    assert layer_writes == ["/app", "/etc/app/"]  # nothing written the second time
    after = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in layer_paths(store, first.digest)]
    assert after == before


def test_a_changed_step_rebuilds_only_its_own_layer(
    store: ImageStore, context: Path, layer_writes: list[str]
) -> None:
    store.bake("web", recipe(), context)
    (context / "VERSION").write_text("1.1\n")
    store.bake("web", recipe(), context)
    assert layer_writes == ["/app", "/etc/app/", "/etc/app/"]


def test_a_cache_entry_whose_blob_is_gone_is_rebuilt(
    store: ImageStore, context: Path, layer_writes: list[str]
) -> None:
    first = store.bake("web", recipe(), context)
    lost = layer_paths(store, first.digest)[0]
    lost.unlink()
    assert store.bake("web", recipe(), context).digest == first.digest
    assert layer_writes == ["/app", "/etc/app/", "/app"]
    assert lost.exists()


def test_a_file_that_changes_during_the_bake_is_refused(context: Path, tmp_path: Path) -> None:
    layer = scan_copy(CopyStep(src="app", dest="/app"), context)
    (context / "app" / "server.py").write_text("print('changed meanwhile')\n")
    with open(tmp_path / "out.tar", "wb") as out, pytest.raises(BakeError, match="changed"):
        write_layer(layer, out)


# -- tags and lookups ---------------------------------------------------------------------


def test_rebaking_a_name_moves_it_and_keeps_the_older_digest(
    store: ImageStore, context: Path
) -> None:
    old = store.bake("web", recipe(), context)
    new = store.bake("web", recipe(cmd=["python3", "-O", "server.py"]), context)
    assert store.resolve("web") == new.digest
    assert store.get(old.digest).cmd == ["python3", "server.py"]  # running releases still start
    assert store.rootfs(old.digest).is_dir()
    assert [r.digest for r in store.list()] == [new.digest]
    history = store.list(include_superseded=True)
    assert [(r.digest, r.superseded) for r in history] == [(new.digest, False), (old.digest, True)]

    back = store.bake("web", recipe(), context)  # a revert gives the old digest back
    assert back.digest == old.digest
    assert store.resolve("web") == old.digest
    index = json.loads((store.root / "index.json").read_bytes())
    assert sorted(e["digest"] for e in index["manifests"]) == sorted([old.digest, new.digest])


def test_resolve_an_unknown_name_lists_the_known_ones(store: ImageStore, context: Path) -> None:
    store.bake("web", recipe(), context)
    store.bake("api", recipe(), context)
    with pytest.raises(UsageError, match=r"'worker'.*known: api, web"):
        store.resolve("worker")
    with pytest.raises(UsageError, match="no image sha256:0000"):
        store.resolve("sha256:" + "0" * 64)
    with pytest.raises(UsageError, match="not an image digest"):
        store.info("sha256:../../etc")


def test_info_describes_how_to_run_the_image(store: ImageStore, context: Path) -> None:
    ref = store.bake("web", recipe(), context)
    info = store.info(store.resolve("web"))
    assert (info.digest, info.config_digest) == (ref.digest, ref.config_digest)
    assert (info.cmd, info.env, info.workdir) == (
        ["python3", "server.py"],
        {"A": "1", "B": "2"},
        "/app",
    )
    assert info.size == ref.size == sum(p.stat().st_size for p in layer_paths(store, ref.digest))
    assert len(info.layers) == 2


def test_a_missing_copy_source_is_named(store: ImageStore, context: Path) -> None:
    spec = recipe(copy=[{"src": "app", "dest": "/app"}, {"src": "assets/logo.png", "dest": "/a/"}])
    with pytest.raises(
        MissingFileError, match=r"images\.web\.copy\[1\]\.src: 'assets/logo\.png'"
    ) as caught:
        store.bake("web", spec, context)
    assert caught.value.exit_code == 2
    assert not (store.root / "index.json").exists()  # nothing was tagged


def test_bad_names_and_absolute_sources_are_usage_errors(store: ImageStore, context: Path) -> None:
    with pytest.raises(UsageError, match="cannot name an image"):
        store.bake("sha256:" + "a" * 64, recipe(), context)
    with pytest.raises(UsageError, match="absolute"):
        store.bake("web", recipe(copy=[{"src": str(context / "app"), "dest": "/app"}]), context)


# -- rootfs and file manifest -------------------------------------------------------------


def walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    for path in sorted(root.rglob("*")):
        yield path.relative_to(root).as_posix(), path.lstat()


def test_rootfs_holds_the_images_files_with_their_modes(store: ImageStore, context: Path) -> None:
    old = os.umask(0o077)  # unpacking must not let the umask change modes either
    try:
        rootfs = store.rootfs(store.bake("web", recipe(), context).digest)
    finally:
        os.umask(old)
    assert (rootfs / "app" / "server.py").read_text() == "print('hello')\n"
    assert (rootfs / "etc" / "app" / "VERSION").read_text() == "1.0\n"
    assert (rootfs / "app" / "static" / LONG_NAME).read_text() == "long\n"
    assert (rootfs / "app" / "static" / "ünïcode.txt").exists()
    assert os.readlink(rootfs / "app" / "current") == "server.py"
    modes = {path: stat.S_IMODE(st.st_mode) for path, st in walk(rootfs)}
    assert modes["app/run.sh"] == 0o755
    assert modes["app/server.py"] == 0o644
    assert modes["app/empty"] == modes["etc"] == 0o755
    assert {st.st_mtime for path, st in walk(rootfs) if stat.S_ISREG(st.st_mode)} == {EPOCH}


def test_rootfs_is_unpacked_once_and_shared(store: ImageStore, context: Path) -> None:
    digest = store.bake("web", recipe(), context).digest
    first = store.rootfs(digest)
    inode = (first / "app" / "server.py").stat().st_ino
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(store.rootfs(digest))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [first] * 4
    assert (first / "app" / "server.py").stat().st_ino == inode
    assert list((store.rootfs_root / ".partial").iterdir()) == []


def test_concurrent_first_unpacks_agree_and_leave_nothing_behind(
    store: ImageStore, context: Path
) -> None:
    digest = store.bake("web", recipe(), context).digest
    results: list[Path] = []
    errors: list[BaseException] = []

    def unpack() -> None:
        try:
            results.append(store.rootfs(digest))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=unpack) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 4
    assert sorted(p.name for p in store.rootfs_root.iterdir()) == [".partial", digest[7:]]
    assert list((store.rootfs_root / ".partial").iterdir()) == []


def test_file_manifest_describes_the_rootfs_exactly(store: ImageStore, context: Path) -> None:
    # Two steps that overlap: the second replaces a directory of the first with a file.
    spec = recipe(copy=[{"src": "app", "dest": "/app"}, {"src": "VERSION", "dest": "/app/static"}])
    digest = store.bake("web", spec, context).digest
    entries = {e.path: e for e in store.file_manifest(digest)}
    seen: dict[str, FileEntry] = {}
    for path, st in walk(store.rootfs(digest)):
        full = store.rootfs(digest) / path
        if stat.S_ISLNK(st.st_mode):
            seen[path] = FileEntry(path, "symlink", 0o777, target=os.readlink(full))
        elif stat.S_ISDIR(st.st_mode):
            seen[path] = FileEntry(path, "dir", stat.S_IMODE(st.st_mode))
        else:
            sha = hashlib.sha256(full.read_bytes()).hexdigest()
            seen[path] = FileEntry(path, "file", stat.S_IMODE(st.st_mode), st.st_size, sha)
    assert seen == entries
    assert entries["app/static"].type == "file"
    assert "app/static/index.html" not in entries


def test_a_corrupted_layer_is_detected_and_a_rebake_repairs_it(
    store: ImageStore, context: Path
) -> None:
    digest = store.bake("web", recipe(), context).digest
    layer = layer_paths(store, digest)[0]
    data = bytearray(layer.read_bytes())
    data[data.index(b"print('hello')")] ^= 0x01  # same size, one bit flipped
    layer.chmod(0o644)
    layer.write_bytes(bytes(data))
    with pytest.raises(StateError, match=f"{store.info(digest).layers[0]} is corrupted") as caught:
        store.rootfs(digest)
    assert "bake" in str(caught.value)
    assert not (store.rootfs_root / digest[7:]).exists()
    assert list((store.rootfs_root / ".partial").iterdir()) == []

    assert store.bake("web", recipe(), context).digest == digest
    assert (store.rootfs(digest) / "app" / "server.py").read_text() == "print('hello')\n"


def test_a_corrupted_manifest_or_config_is_detected(store: ImageStore, context: Path) -> None:
    ref = store.bake("web", recipe(), context)
    config = store.blobs.path(ref.config_digest)
    config.chmod(0o644)
    config.write_bytes(config.read_bytes().replace(b"server.py", b"evil.py!!"))
    with pytest.raises(StateError, match=f"{ref.config_digest} is corrupted"):
        store.info(ref.digest)
    manifest = store.blobs.path(ref.digest)
    manifest.chmod(0o644)
    manifest.write_bytes(manifest.read_bytes() + b" ")
    with pytest.raises(StateError, match=f"{ref.digest} is corrupted"):
        store.file_manifest(ref.digest)
