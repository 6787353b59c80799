"""Files on disk against an image's file manifest: every kind of tampering is named."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from corral.audit.manifest import compare_manifest
from corral.audit.statcache import StatCache
from corral.audit.tree import FileState, scan, walk
from corral.images.model import FileEntry


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


MANIFEST = [
    FileEntry(path="app", type="dir", mode=0o755),
    FileEntry(path="app/index.html", type="file", mode=0o644, size=5, sha256=_sha(b"hello")),
    FileEntry(path="app/run", type="file", mode=0o755, size=3, sha256=_sha(b"run")),
    FileEntry(path="app/current", type="symlink", mode=0o777, target="index.html"),
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    (rootfs / "app").mkdir(parents=True)
    os.chmod(rootfs / "app", 0o755)
    (rootfs / "app" / "index.html").write_bytes(b"hello")
    os.chmod(rootfs / "app" / "index.html", 0o644)
    (rootfs / "app" / "run").write_bytes(b"run")
    os.chmod(rootfs / "app" / "run", 0o755)
    (rootfs / "app" / "current").symlink_to("index.html")
    return rootfs


def observed(root: Path) -> dict[str, FileState]:
    prefix = len(str(root)) + 1
    found = scan(
        ((p, st) for p, st in walk(str(root)) if p != str(root)), StatCache(None, b"k"), full=True
    )
    return {p[prefix:]: s for p, s in found.items()}


def rendered(root: Path) -> list[str]:
    return [f.render() for f in compare_manifest(MANIFEST, observed(root))]


def test_an_untouched_root_is_clean(root: Path) -> None:
    assert rendered(root) == []


def test_one_changed_byte_is_named_with_both_digests(root: Path) -> None:
    (root / "app" / "index.html").write_bytes(b"hellO")
    assert rendered(root) == [
        f"tampered: /app/index.html sha256 {_sha(b'hellO')[:12]}… ≠ manifest {_sha(b'hello')[:12]}…"
    ]


def test_a_changed_mode_and_an_added_setuid_bit_are_found(root: Path) -> None:
    os.chmod(root / "app" / "index.html", 0o666)
    os.chmod(root / "app" / "run", 0o4755)
    assert rendered(root) == [
        "mode: /app/index.html 0666 ≠ manifest 0644",
        "mode: /app/run 4755 ≠ manifest 0755",
    ]


def test_added_and_removed_files(root: Path) -> None:
    (root / "app" / "run").unlink()
    (root / "app" / "backdoor").write_bytes(b"x")
    (root / "etc").mkdir()
    assert rendered(root) == [
        "added: /app/backdoor (file)",
        "removed: /app/run (file)",
        "added: /etc (dir)",
    ]


def test_a_retargeted_symlink_is_found(root: Path) -> None:
    (root / "app" / "current").unlink()
    (root / "app" / "current").symlink_to("/etc/shadow")
    assert rendered(root) == ["target: /app/current → /etc/shadow ≠ manifest → index.html"]


def test_a_file_replaced_by_a_symlink_is_a_type_change(root: Path) -> None:
    (root / "app" / "run").unlink()
    (root / "app" / "run").symlink_to("index.html")
    assert rendered(root) == ["type: /app/run is a symlink ≠ manifest file"]


def test_owners_are_checked_against_the_manifest_or_the_unpacking_user(root: Path) -> None:
    me = (os.getuid(), os.getgid())
    assert compare_manifest(MANIFEST, observed(root), owners={me}) == []
    if os.getuid() != 0:
        pytest.skip("chown needs root")
    os.chown(root / "app" / "run", 4321, 4321, follow_symlinks=False)
    found = compare_manifest(MANIFEST, observed(root), owners={me})
    assert [f.render() for f in found] == ["owner: /app/run 4321:4321 ≠ manifest 0:0"]
