"""`corral export kubernetes`: a release's objects as one deterministic YAML stream.

Pure: the same release and settings give the same bytes. Secret *values* are never written
(law 5): the stream names each Secret the pods reference and says how to create it.
"""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

from ruamel.yaml import YAML

from corral.drivers.kubernetes_manifests import (
    ClusterSettings,
    ReleaseSource,
    claims,
    http_route,
    replica_set,
    secret_name,
    service,
)


def release_manifests(
    src: ReleaseSource,
    settings: ClusterSettings,
    *,
    replicas: int,
    routed: bool,
    weights: list[tuple[ReleaseSource, int]] | None = None,
    image_user: str | None = None,
) -> list[dict[str, Any]]:
    """Claims, the ReplicaSet(s), and for a routed service its Service and HTTPRoute.

    A service with per_instance volumes has one ReplicaSet (and claim) per serial, numbered
    from 0 as the executor numbers instances, as the driver makes them. `weights`: the
    HTTPRoute's backends (default: this release, 100)."""
    docs: list[dict[str, Any]] = []
    per_serial = src.per_serial
    sources = [replace(src, serial=n) for n in range(replicas)] if per_serial else [src]
    seen: set[str] = set()
    for each in sources:
        for claim in claims(each, settings):
            if claim["metadata"]["name"] not in seen:  # shared claims once
                seen.add(claim["metadata"]["name"])
                docs.append(claim)
    for each in sources:
        docs.append(replica_set(each, settings, 1 if per_serial else replicas, image_user))
    if routed:
        docs.append(service(src))
        backends = weights or [(src, 100)]
        docs.append(http_route(src.project, src.environment, src.service, backends, settings))
    return docs


def secret_notes(src: ReleaseSource) -> list[str]:
    """How to create each Secret the pods reference (values never appear here, law 5)."""
    notes = []
    for name in sorted(src.config.get("secrets") or {}):
        notes.append(
            f"kubectl create secret generic {secret_name(src, name)} "
            f"--from-file={name}=PATH_TO_VALUE  # then label it io.corral.secret={name}"
        )
    return notes


def render(src: ReleaseSource, docs: list[dict[str, Any]], recorded: bool) -> str:
    """The YAML stream: a header saying what it is, then one document per object."""
    header = [
        f"# corral export kubernetes: {src.project}/{src.environment} {src.service} "
        f"r{src.release} ({src.image_digest})",
        "# Push the image first (its digest is kept): skopeo copy --preserve-digests "
        "oci:$CORRAL_HOME/images:IMAGE docker://IMAGE_REGISTRY/PROJECT:IMAGE",
    ]
    if not recorded:
        header.append(f"# r{src.release} is not recorded yet: `corral apply` would record it")
    notes = secret_notes(src)
    if notes:
        header.append("# Secrets the pods reference (create them; corral never exports values):")
        header.extend(f"#   {line}" for line in notes)
    body = "---\n".join(_dump(doc) for doc in docs)
    return "\n".join(header) + "\n---\n" + body


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _dump(doc: dict[str, Any]) -> str:
    """Block style, keys sorted, no aliases (labels repeated as a selector are written out)."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096  # an image reference on one line
    yaml.representer.ignore_aliases = lambda data: True
    buffer = io.StringIO()
    yaml.dump(_sorted(doc), buffer)
    return buffer.getvalue()
