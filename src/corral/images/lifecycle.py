"""An image's life after the bake: channels, revocation, listing, garbage collection, verify.

Everything here is kept in the store's index.json annotations (never in an image, so none of
it changes a digest):

- channels: a name's current tag is its `dev`; `promote` moves `staging` to a digest of the
  name, and `prod` only to the digest `staging` holds (dev → staging → prod);
- revocation: a reason recorded on every entry of a digest; `deployable` refuses it;
- gc: drops superseded entries no longer needed, then every blob no kept image reaches.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.errors import StateError, UsageError
from corral.images import oci, sbom
from corral.images.blobs import BlobStore
from corral.images.digests import ALGORITHM, hex_of, is_digest
from corral.images.store import ImageStore

CHANNELS = ("staging", "prod")
_PREVIOUS = {"staging": "dev", "prod": "staging"}


@dataclass(frozen=True)
class ImageEntry:
    """One (name, digest) of the index with what `corral images` shows about it."""

    name: str
    digest: str
    config_digest: str
    size: int
    current: bool  # the name's tag (its dev channel)
    channels: list[str]
    tagged_at: int | None
    base: str | None
    revoked: str | None
    stale: bool = False
    releases: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.digest,
            "config_digest": self.config_digest,
            "base": self.base,
            "size": self.size,
            "tagged_at": self.tagged_at,
            "age_seconds": int(time.time()) - self.tagged_at if self.tagged_at else None,
            "channels": self.channels,
            "current": self.current,
            "revoked": self.revoked,
            "stale": self.stale,
            "releases": self.releases,
        }


def entries(store: ImageStore, pinned: dict[str, str] | None = None) -> list[ImageEntry]:
    """Every named entry, current and superseded, oldest first per name.

    `pinned` maps a base ("busybox") to the label it resolves to now ("busybox@sha256:…",
    from corral.lock): an image made from an older pin is stale too."""
    found = []
    index = store.index()
    for entry in index.get("manifests", []):
        named = oci.entry_name(entry)
        if named is None:
            continue
        notes = entry.get("annotations", {})
        digest = str(entry["digest"])
        info = store.info(digest)
        channels = (["dev"] if not named[1] else []) + _channels(notes)
        tagged = notes.get(oci.TAGGED_AT)
        found.append(
            ImageEntry(
                name=named[0],
                digest=digest,
                config_digest=info.config_digest,
                size=info.size,
                current=not named[1],
                channels=channels,
                tagged_at=int(tagged) if tagged and str(tagged).isdigit() else None,
                base=store.base_of(digest),
                revoked=notes.get(oci.REVOKED),
            )
        )
    current = {e.name: e.digest for e in found if e.current}
    return [_with_staleness(e, current, pinned or {}) for e in found]


def _with_staleness(
    entry: ImageEntry, current: dict[str, str], pinned: dict[str, str]
) -> ImageEntry:
    """Stale: layered on `image:X@D` while X's tag has moved on from D, or on a base that
    corral.lock now pins differently."""
    base = entry.base or ""
    name, _, digest = base.partition("@")
    moved = name in pinned and pinned[name] != base
    if name.startswith("image:") and digest:
        image = name.removeprefix("image:")
        moved = image in current and current[image] != digest
    return ImageEntry(**{**entry.__dict__, "stale": True}) if moved else entry


def _channels(notes: dict[str, Any]) -> list[str]:
    return [c for c in str(notes.get(oci.CHANNELS, "")).split(",") if c]


def channel_digest(store: ImageStore, name: str, channel: str) -> str:
    """The digest `name@channel` stands for (`dev` is the name's current tag)."""
    if channel == "dev":
        return store.resolve(name)
    if channel not in CHANNELS:
        raise UsageError(
            f"{name}@{channel}: unknown channel {channel!r}",
            hint="channels are dev, staging and prod (or give a digest: name@sha256:…)",
        )
    for entry in store.index().get("manifests", []):
        named = oci.entry_name(entry)
        if named and named[0] == name and channel in _channels(entry.get("annotations", {})):
            return str(entry["digest"])
    raise UsageError(
        f"no image of {name!r} is in the {channel} channel",
        hint=f"promote one: corral image promote {name}@sha256:… --to {channel}",
    )


def _holder(store: ImageStore, name: str, channel: str) -> str | None:
    try:
        return channel_digest(store, name, channel)
    except UsageError:
        return None


def promote(store: ImageStore, name: str, digest: str, channel: str) -> None:
    """Put `name@digest` in `channel`. staging takes any digest of the name; prod only the
    digest staging holds. A revoked digest cannot be promoted."""
    if channel not in CHANNELS:
        raise UsageError(f"cannot promote to {channel!r}", hint="use --to staging or --to prod")
    hex_of(digest)
    matches = [e for e in entries(store) if e.name == name and e.digest == digest]
    if not matches:
        raise UsageError(
            f"{digest} is not an image of {name!r} in this store",
            hint="`corral images` lists each name's digests",
        )
    if matches[0].revoked:
        raise UsageError(f"{name}@{digest} is revoked: {matches[0].revoked}")
    before = _PREVIOUS[channel]
    if before != "dev" and _holder(store, name, before) != digest:
        raise UsageError(
            f"{name}@{digest} is not in {before}: it must pass {before} before {channel}",
            hint=f"corral image promote {name}@{digest} --to {before}",
        )

    def change(index: dict[str, Any]) -> dict[str, Any]:
        out = []
        for entry in index.get("manifests", []):
            named = oci.entry_name(entry)
            if named and named[0] == name:
                notes = dict(entry.get("annotations", {}))
                held = [c for c in _channels(notes) if c != channel]
                if entry["digest"] == digest:
                    held.append(channel)
                notes.pop(oci.CHANNELS, None)
                if held:
                    notes[oci.CHANNELS] = ",".join(c for c in CHANNELS if c in held)
                entry = {**entry, "annotations": notes}
            out.append(entry)
        return {**index, "manifests": out}

    store.update_index(change)


def revoke(store: ImageStore, digest: str, reason: str) -> int:
    """Record why `digest` may no longer be deployed; how many index entries were marked."""
    hex_of(digest)
    if not reason.strip():
        raise UsageError("a revocation needs a reason", hint="--reason 'CVE-2026-1234 in openssl'")
    marked = 0

    def change(index: dict[str, Any]) -> dict[str, Any]:
        nonlocal marked
        out = []
        for entry in index.get("manifests", []):
            if entry["digest"] == digest:
                notes = dict(entry.get("annotations", {})) | {oci.REVOKED: reason.strip()}
                entry = {**entry, "annotations": notes}
                marked += 1
            out.append(entry)
        return {**index, "manifests": out}

    store.update_index(change)
    if not marked:
        raise UsageError(
            f"no image {digest} in the image store",
            hint="`corral images` lists the digests it holds",
        )
    return marked


def revoked_reason(store: ImageStore, digest: str) -> str | None:
    for entry in store.index().get("manifests", []):
        if entry["digest"] == digest and oci.REVOKED in entry.get("annotations", {}):
            return str(entry["annotations"][oci.REVOKED])
    return None


def deployable(store: ImageStore, ref: str, baked: dict[str, str]) -> str:
    """The digest a service's `image:` stands for: `name` (just baked), `name@channel` or
    `name@sha256:…`. Raises UsageError (exit 2) for a revoked image, naming the reason."""
    name, _, pin = ref.partition("@")
    if not pin:
        digest = baked[name] if name in baked else store.resolve(name)
    elif pin.startswith(f"{ALGORITHM}:"):
        hex_of(pin)
        digest = pin
        if not store.has(digest):
            raise UsageError(f"no image {ref} in the image store", hint="bake or import it")
    else:
        digest = channel_digest(store, name, pin)
    refuse_revoked(store, ref, digest)
    return digest


def refuse_revoked(store: ImageStore, ref: str, digest: str) -> None:
    """UsageError (exit 2) naming the reason when `digest` is revoked; plan and apply call it
    (a saved plan again at apply: the image may have been revoked in between)."""
    reason = revoked_reason(store, digest)
    if reason is not None:
        raise UsageError(
            f"image {ref} ({digest}) is revoked: {reason}",
            hint="deploy another image: bake a fixed one, or promote a digest that is not "
            "revoked (`corral images` lists them)",
        )


# -- garbage collection -----------------------------------------------------------------------


@dataclass
class GcReport:
    removed_entries: list[tuple[str, str]]  # (name, digest) dropped from the index
    removed_blobs: list[str]
    freed_bytes: int
    dry_run: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "removed_images": [{"name": n, "digest": d} for n, d in self.removed_entries],
            "removed_blobs": len(self.removed_blobs),
            "freed_bytes": self.freed_bytes,
        }


def gc(
    store: ImageStore,
    *,
    keep: int = 3,
    in_use: Iterable[str] = (),
    dry_run: bool = False,
    grace: float = 300.0,
) -> GcReport:
    """Drop superseded entries that no release uses, hold no channel and are not among the
    last `keep` of their name; then delete every blob no remaining entry reaches (manifest,
    config, layers, file manifest). Holds the index lock throughout.

    A bake writes its blobs before it tags them, without the lock: blobs younger than
    `grace` seconds are left alone so a gc never pulls a layer from under a running bake."""
    if keep < 1:
        raise UsageError("--keep must be 1 or more (the current image of each name is kept)")
    used = set(in_use)
    with store.locked():
        index = store.index()
        manifests = list(index.get("manifests", []))
        kept_entries, dropped = _choose(manifests, keep, used)
        reachable = _reachable(store.blobs, kept_entries)
        # Everything else goes, cache-only blobs included (their cache entries then miss).
        young = time.time() - grace
        garbage = [
            d
            for d in _all_blobs(store.blobs)
            if d not in reachable and _mtime(store.blobs.path(d)) < young
        ]
        freed = sum(_size(store.blobs.path(d)) for d in garbage)
        if not dry_run:
            if len(kept_entries) != len(manifests):
                store.write_index({**index, "manifests": kept_entries})
            for digest in garbage:
                store.blobs.path(digest).unlink(missing_ok=True)
            for _, digest in dropped:
                if digest not in {str(e["digest"]) for e in kept_entries}:
                    shutil.rmtree(store.rootfs_root / hex_of(digest), ignore_errors=True)
    return GcReport(dropped, garbage, freed, dry_run)


def _choose(
    manifests: list[dict[str, Any]], keep: int, used: set[str]
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for entry in manifests:
        named = oci.entry_name(entry)
        if named is not None:
            by_name.setdefault(named[0], []).append(entry)
    recent = {id(e) for group in by_name.values() for e in group[-keep:]}
    chosen: set[int] = set()
    dropped = []
    for entry in manifests:
        named = oci.entry_name(entry)
        notes = entry.get("annotations", {})
        protected = (
            (named is None and sbom.SUBJECT not in notes)  # not corral's: left alone
            or (named is not None and not named[1])  # current tag
            or id(entry) in recent
            or bool(_channels(notes))
            or entry["digest"] in used
        )
        if protected:
            chosen.add(id(entry))
        elif named is not None:
            dropped.append((named[0], str(entry["digest"])))
    images = {str(e["digest"]) for e in manifests if id(e) in chosen}
    # An SBOM artifact lives exactly as long as the image it describes.
    kept = [
        e
        for e in manifests
        if id(e) in chosen or e.get("annotations", {}).get(sbom.SUBJECT) in images
    ]
    return kept, dropped


def _reachable(blobs: BlobStore, manifests: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for entry in manifests:
        digest = str(entry["digest"])
        found.add(digest)
        try:
            manifest = json.loads(blobs.read(digest))
        except StateError:
            continue  # missing or corrupt: nothing below it can be found; verify reports it
        found.add(str(manifest["config"]["digest"]))
        found.update(str(layer["digest"]) for layer in manifest.get("layers", []))
        files = (manifest.get("annotations") or {}).get(oci.FILES)
        if files:
            found.add(str(files))
    return found


def _all_blobs(blobs: BlobStore) -> list[str]:
    if not blobs.dir.is_dir():
        return []
    names = (f"{ALGORITHM}:{p.name}" for p in sorted(blobs.dir.iterdir()))
    return [d for d in names if is_digest(d)]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# -- verify -----------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    checked: int
    corrupt: list[str]  # digests whose content did not match (moved aside to corrupt/)
    missing: list[str]  # digests an image names that are not in the store

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.missing

    def to_json(self) -> dict[str, Any]:
        return {"checked": self.checked, "corrupt": self.corrupt, "missing": self.missing}


def verify(store: ImageStore) -> VerifyReport:
    """Re-hash every blob; report the corrupt (quarantined) and the missing ones."""
    corrupt = []
    digests = _all_blobs(store.blobs)
    for digest in digests:
        try:
            with open(store.blobs.path(digest), "rb") as handle:
                actual = f"{ALGORITHM}:{hashlib.file_digest(handle, ALGORITHM).hexdigest()}"
            store.blobs.check(digest, actual)
        except StateError:
            corrupt.append(digest)
        except FileNotFoundError:
            continue
    present = set(digests) - set(corrupt)
    wanted = _reachable(store.blobs, list(store.index().get("manifests", [])))
    missing = sorted(d for d in wanted if d not in present and d not in corrupt)
    return VerifyReport(len(digests), corrupt, missing)
