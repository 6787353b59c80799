"""The OCI image documents (image-spec v1.1): config, manifest, index. Pure data, no I/O.

Every document is serialised with `canonical_json`, so equal content gives equal bytes and
equal digests. Nothing in a config or manifest depends on time or place: `created` is the
epoch and there is no history.
"""

from __future__ import annotations

import platform
from typing import Any

from corral.images.model import EPOCH_ISO

OCI_LAYOUT_VERSION = "1.0.0"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"

REF_NAME = "org.opencontainers.image.ref.name"  # the tag: current digest of a name
SUPERSEDED = "io.corral.superseded"  # an older digest of that name, kept for its releases
CREATED_FROM = "io.corral.created-from"  # canonical JSON describing the bake's inputs
FILES = "io.corral.files"  # digest of the image's file manifest blob
FILES_MEDIA_TYPE = "application/vnd.corral.files.v1+json"
BASE = "io.corral.base"  # manifest: what the image is layered on ("busybox@sha256:…", …)
HAS_OS = "io.corral.has-os"  # manifest: "true" when the image brings its own /bin/sh
# Index-only annotations (never part of an image's digest): a name's history and lifecycle.
TAGGED_AT = "io.corral.tagged-at"  # unix time the digest was first tagged with the name
CHANNELS = "io.corral.channels"  # comma-separated channels (staging, prod) this entry holds
REVOKED = "io.corral.revoked"  # the reason the digest may no longer be deployed
_KEPT_ON_RETAG = (TAGGED_AT, CHANNELS, REVOKED)

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def host_architecture() -> str:
    """The host's architecture as OCI spells it (GOARCH): x86_64 → amd64, aarch64 → arm64."""
    machine = platform.machine().lower()
    return _GOARCH.get(machine, machine)


def descriptor(media_type: str, digest: str, size: int) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def image_config(
    *,
    architecture: str,
    env: dict[str, str],
    cmd: list[str],
    workdir: str,
    diff_ids: list[str],
    entrypoint: list[str] | None = None,
    user: str | None = None,
    expose: list[int] | None = None,
    labels: dict[str, str] | None = None,
    created: str = EPOCH_ISO,
) -> dict[str, Any]:
    """The config; optional fields appear only when set, so older digests stay the same."""
    run: dict[str, Any] = {
        "Env": [f"{key}={env[key]}" for key in sorted(env)],
        "Cmd": list(cmd),
        "WorkingDir": workdir,
    }
    if entrypoint:
        run["Entrypoint"] = list(entrypoint)
    if user:
        run["User"] = user
    if expose:
        run["ExposedPorts"] = {f"{port}/tcp": {} for port in sorted(set(expose))}
    if labels:
        run["Labels"] = dict(sorted(labels.items()))
    return {
        "architecture": architecture,
        "os": "linux",
        "created": created,
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }


def image_manifest(
    config: dict[str, Any],
    layers: list[dict[str, Any]],
    files_digest: str,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": layers,
        "annotations": {FILES: files_digest, **(extra or {})},
    }


def empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}


def tag(
    index: dict[str, Any],
    name: str,
    manifest: dict[str, Any],
    created_from: str,
    now: str = "0",
) -> dict[str, Any]:
    """`index` with `name` pointing at `manifest`; the name's previous digest marked superseded.

    One current entry per name; every digest the name ever had stays listed once, oldest
    first, so it is still a root for garbage collection and its history stays readable. The
    entry's channels, revocation and first tagging time survive a re-tag.
    """
    current: list[dict[str, Any]] = []
    kept: dict[str, str] = {TAGGED_AT: now}
    for entry in index.get("manifests", []):
        notes = entry.get("annotations", {})
        if name in (notes.get(REF_NAME), notes.get(SUPERSEDED)):
            if entry["digest"] == manifest["digest"]:
                kept |= {k: str(notes[k]) for k in _KEPT_ON_RETAG if k in notes}
                continue  # replaced by the fresh entry below
            if notes.get(REF_NAME) == name:
                notes = {k: v for k, v in notes.items() if k != REF_NAME} | {SUPERSEDED: name}
                entry = {**entry, "annotations": notes}
        current.append(entry)
    notes = {REF_NAME: name, CREATED_FROM: created_from, **kept}
    current.append({**manifest, "annotations": notes})
    return {**index, "schemaVersion": 2, "mediaType": INDEX, "manifests": current}


def entry_name(entry: dict[str, Any]) -> tuple[str, bool] | None:
    """(name, superseded) of an index entry, or None for an entry corral did not tag."""
    notes = entry.get("annotations", {})
    if REF_NAME in notes:
        return str(notes[REF_NAME]), False
    if SUPERSEDED in notes:
        return str(notes[SUPERSEDED]), True
    return None
