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
) -> dict[str, Any]:
    return {
        "architecture": architecture,
        "os": "linux",
        "created": EPOCH_ISO,
        "config": {
            "Env": [f"{key}={env[key]}" for key in sorted(env)],
            "Cmd": list(cmd),
            "WorkingDir": workdir,
        },
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    }


def image_manifest(
    config: dict[str, Any], layers: list[dict[str, Any]], files_digest: str
) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": layers,
        "annotations": {FILES: files_digest},
    }


def empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}


def tag(
    index: dict[str, Any], name: str, manifest: dict[str, Any], created_from: str
) -> dict[str, Any]:
    """`index` with `name` pointing at `manifest`; the name's previous digest marked superseded.

    One current entry per name; every digest the name ever had stays listed once, oldest
    first, so it is still a root for garbage collection and its history stays readable.
    """
    current: list[dict[str, Any]] = []
    for entry in index.get("manifests", []):
        notes = entry.get("annotations", {})
        if name in (notes.get(REF_NAME), notes.get(SUPERSEDED)):
            if entry["digest"] == manifest["digest"]:
                continue  # replaced by the fresh entry below
            if notes.get(REF_NAME) == name:
                notes = {k: v for k, v in notes.items() if k != REF_NAME} | {SUPERSEDED: name}
                entry = {**entry, "annotations": notes}
        current.append(entry)
    current.append({**manifest, "annotations": {REF_NAME: name, CREATED_FROM: created_from}})
    return {**index, "schemaVersion": 2, "mediaType": INDEX, "manifests": current}


def entry_name(entry: dict[str, Any]) -> tuple[str, bool] | None:
    """(name, superseded) of an index entry, or None for an entry corral did not tag."""
    notes = entry.get("annotations", {})
    if REF_NAME in notes:
        return str(notes[REF_NAME]), False
    if SUPERSEDED in notes:
        return str(notes[SUPERSEDED]), True
    return None
