"""Baking a spec's images: bases pinned by `corral.lock`, `image:` bases first, in order.

`bake_images` is what `corral bake` (and plan/apply) run; `check_reproducible` is
`corral bake --check`: two bakes from scratch, compared file by file.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.errors import UsageError
from corral.images import bases
from corral.images.bases import BasePin
from corral.images.lockfile import lock_path, read_lock, write_lock
from corral.images.model import FileEntry, ImageRef, Parent
from corral.images.store import ImageStore
from corral.spec.model import ImageSpec


@dataclass
class BakeResult:
    refs: dict[str, ImageRef]
    pins: dict[str, BasePin]
    lock_changed: bool = False
    lock_was: dict[str, BasePin] = field(default_factory=dict)


def bake_order(images: Mapping[str, ImageSpec]) -> list[str]:
    """Names in an order where every `image:` base comes before the images made from it."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " → ".join([*chain[chain.index(name) :], name])
            raise UsageError(
                f"images.{name}.from: the images' bases form a cycle ({cycle})",
                hint="an image cannot be layered on itself; break the cycle with "
                "`from: busybox` or `from: scratch`",
            )
        state[name] = "visiting"
        base = images[name].base_image
        if base is not None:
            if base not in images:
                known = ", ".join(sorted(images))
                raise UsageError(
                    f"images.{name}.from: no image named {base!r} in this spec (images: {known})",
                    hint="name one of the spec's images, or use `busybox` or `scratch`",
                )
            visit(base, [*chain, name])
        state[name] = "done"
        order.append(name)

    for name in sorted(images):
        visit(name, [])
    return order


def bake_images(
    store: ImageStore,
    images: Mapping[str, ImageSpec],
    spec_dir: Path,
    *,
    update_bases: bool = False,
    lock_file: Path | None = None,
    progress: Callable[[str, ImageRef], None] | None = None,
    on_output: Callable[[str, str], None] | None = None,
) -> BakeResult:
    """Bake every image, bases first. The lock is read, and written only when it changes."""
    order = bake_order(images)
    path = lock_file or lock_path(spec_dir)
    was = read_lock(path)
    pins = dict(was)
    uses_busybox = any(images[n].from_ == "busybox" for n in order)
    if uses_busybox and (update_bases or "busybox" not in pins):
        pins["busybox"] = bases.resolve(store)
    changed = write_lock(path, pins) if pins != was else False
    refs: dict[str, ImageRef] = {}
    for name in order:
        recipe = images[name]
        parent = _parent(store, recipe, pins, refs)
        shown = (lambda text, n=name: on_output(n, text)) if on_output else None
        refs[name] = store.bake(name, recipe, spec_dir, parent=parent, on_output=shown)
        if progress is not None:
            progress(name, refs[name])
    return BakeResult(refs=refs, pins=pins, lock_changed=changed, lock_was=was)


def _parent(
    store: ImageStore, recipe: ImageSpec, pins: dict[str, BasePin], refs: dict[str, ImageRef]
) -> Parent | None:
    if recipe.from_ == "scratch":
        return None
    if recipe.from_ == "busybox":
        return bases.parent(store, pins["busybox"])
    base = recipe.base_image
    assert base is not None  # the spec's pattern allows nothing else
    return store.as_parent(refs[base].digest, f"image:{base}")


@dataclass(frozen=True)
class Difference:
    image: str
    digests: tuple[str, str]
    files: list[str]  # paths whose type, mode, owner, size, content or target differ

    @property
    def reproducible(self) -> bool:
        return self.digests[0] == self.digests[1]


def check_reproducible(
    store: ImageStore, images: Mapping[str, ImageSpec], spec_dir: Path
) -> list[Difference]:
    """Bake everything twice, each time into an empty store (no cache), and compare.

    The bases come from `store` (copied), pinned by the spec's lock; the lock is not changed."""
    pins = read_lock(lock_path(spec_dir))
    results: list[dict[str, ImageRef]] = []
    stores: list[ImageStore] = []
    with tempfile.TemporaryDirectory(prefix="corral-check-") as work:
        for attempt in ("a", "b"):
            fresh = ImageStore(Path(work) / attempt / "images", architecture=store.architecture)
            _share_bases(store, fresh, pins)
            lock = Path(work) / attempt / "corral.lock"
            if pins:
                write_lock(lock, pins)
            results.append(bake_images(fresh, images, spec_dir, lock_file=lock).refs)
            stores.append(fresh)
        differences = []
        for name in sorted(images):
            first, second = results[0][name], results[1][name]
            files: list[str] = []
            if first.digest != second.digest:
                files = _differing(
                    stores[0].file_manifest(first.digest), stores[1].file_manifest(second.digest)
                )
            differences.append(Difference(name, (first.digest, second.digest), files))
    return differences


def _share_bases(source: ImageStore, target: ImageStore, pins: dict[str, BasePin]) -> None:
    for pin in pins.values():
        deb = bases.deb_path(source, pin)
        if deb.is_file():
            destination = bases.deb_path(target, pin)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(deb, destination)


def _differing(a: list[FileEntry], b: list[FileEntry]) -> list[str]:
    left = {e.path: e for e in a}
    right = {e.path: e for e in b}
    return sorted(p for p in left.keys() | right.keys() if left.get(p) != right.get(p))
