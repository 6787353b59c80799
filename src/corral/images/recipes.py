"""Baking a spec's images: bases pinned by `corral.lock`, `image:` bases first, in order.

`bake_images` is what `corral bake` (and plan/apply) run; `check_reproducible` is
`corral bake --check`: two bakes from scratch, compared file by file.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from corral.errors import UsageError
from corral.images import bases, debian, ocibase, sbom
from corral.images.lockfile import Pin, lock_path, read_lock, write_lock
from corral.images.model import FileEntry, ImageRef, Parent
from corral.images.store import ImageStore
from corral.spec.model import ImageSpec


@dataclass
class BakeResult:
    refs: dict[str, ImageRef]
    pins: dict[str, Pin]
    lock_changed: bool = False
    lock_was: dict[str, Pin] = field(default_factory=dict)


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
    on_step: Callable[[str, str], None] | None = None,
) -> BakeResult:
    """Bake every image, bases first. The lock is read, and written only when it changes.

    `on_step(image, what)` is told each step as it starts (for progress views); `progress`
    each image once baked."""
    step = on_step or (lambda _name, _what: None)
    order = bake_order(images)
    path = lock_file or lock_path(spec_dir)
    was = read_lock(path)
    pins = dict(was)
    for name in order:
        key = pinned_base(name, images[name])
        if key is not None and (update_bases or key not in pins):
            step(name, f"resolving {key}")
            recipe = images[name]
            suite = recipe.from_.removeprefix("debian:")
            pins[key] = (
                bases.resolve(store)
                if key == "busybox"
                else debian.resolve(store, suite, recipe.packages, recipe.epoch)
            )
    changed = write_lock(path, pins) if pins != was else False
    refs: dict[str, ImageRef] = {}
    for name in order:
        recipe = images[name]
        step(name, f"base {recipe.from_}")
        parent = _parent(store, recipe, pins, refs, spec_dir)
        shown = (lambda text, n=name: on_output(n, text)) if on_output else None
        refs[name] = store.bake(
            name,
            recipe,
            spec_dir,
            parent=parent,
            on_output=shown,
            on_step=functools.partial(step, name),
        )
        step(name, "recording the SBOM")
        packages = parent.packages if parent is not None else []
        sbom.attach(store, refs[name].digest, packages, epoch=recipe.epoch)
        if progress is not None:
            progress(name, refs[name])
    return BakeResult(refs=refs, pins=pins, lock_changed=changed, lock_was=was)


def pinned_base(name: str, recipe: ImageSpec) -> str | None:
    """The lock key of the recipe's base ("busybox", "debian:bookworm[hello]"), if pinned."""
    if recipe.packages and not recipe.from_.startswith("debian:"):
        raise UsageError(
            f"images.{name}.packages: only a `debian:<suite>` base installs packages "
            f"(this image is `from: {recipe.from_}`)",
            hint="use `from: debian:bookworm`, or install what you need in a `run:` step",
        )
    if recipe.from_ == "busybox":
        return "busybox"
    if recipe.from_.startswith("debian:"):
        return debian.lock_key(recipe.from_.removeprefix("debian:"), recipe.packages)
    return None


def _parent(
    store: ImageStore,
    recipe: ImageSpec,
    pins: dict[str, Pin],
    refs: dict[str, ImageRef],
    spec_dir: Path,
) -> Parent | None:
    if recipe.from_ == "scratch":
        return None
    if recipe.from_.startswith("oci:"):
        return ocibase.parent(store, recipe.from_.removeprefix("oci:"), spec_dir, recipe.epoch)
    key = pinned_base("", recipe)
    if key is not None:
        pin = pins[key]
        if isinstance(pin, debian.DebianPin):
            return debian.parent(store, key, pin, recipe.epoch)
        return bases.parent(store, pin)
    base = recipe.base_image
    assert base is not None  # the spec's pattern allows nothing else
    layered = store.as_parent(refs[base].digest, f"image:{base}")
    return replace(layered, packages=sbom.packages_in(store, refs[base].digest))


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


def _share_bases(source: ImageStore, target: ImageStore, pins: dict[str, Pin]) -> None:
    for pin in (deb for pinned in pins.values() for deb in pinned.debs):
        deb = bases.deb_path(source, pin)
        if deb.is_file():
            destination = bases.deb_path(target, pin)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(deb, destination)


def _differing(a: list[FileEntry], b: list[FileEntry]) -> list[str]:
    left = {e.path: e for e in a}
    right = {e.path: e for e in b}
    return sorted(p for p in left.keys() | right.keys() if left.get(p) != right.get(p))
