"""What makes a release: the image digest plus a hash of the instance-defining config.

The canonical form is versioned (`"v": 1`) and has every default resolved, so the hash of an
existing release never changes when corral is upgraded: a new corral that adds a field writes
`"v": 2` for new releases and still reads v1. `replicas`, `route` and `strategy` are *not* part
of a release: changing them scales or re-routes, it does not replace instances.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from corral.spec.model import HealthSpec, ProbeSpec, ServiceSpec

CONFIG_VERSION = 1


def canonical_json(value: Any) -> str:
    """One spelling for one value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def release_config(
    service: ServiceSpec, secrets: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The instance-defining config of a service, canonical and with defaults resolved.

    `secrets`: each secret's reference and recorded version (`secrets.resolve.recorded_refs`),
    never its value (law 5); empty when the service has none, so old hashes stay."""
    health = service.health
    return {
        "v": CONFIG_VERSION,
        "command": list(service.command) if service.command is not None else None,
        "env": dict(sorted(service.env.items())),
        "port": service.port,
        "health": {
            "http": {"path": health.http.path, "status": health.http.status},
            "interval": health.interval,
            "timeout": health.timeout,
            "healthy_threshold": health.healthy_threshold,
            "start_timeout": health.start_timeout,
            # fields added after v1 appear only when set, so existing hashes never change
            **({"tcp": True} if health.tcp else {}),
            **({"exec": list(health.exec_)} if health.exec_ is not None else {}),
            **(
                {"failure_threshold": health.failure_threshold}
                if health.failure_threshold != HealthSpec.model_fields["failure_threshold"].default
                else {}
            ),
            **{
                role: _probe_config(probe)
                for role, probe in (("startup", health.startup), ("liveness", health.liveness))
                if probe is not None
            },
        },
        # sorted by path, so the order volumes are written in does not make a new release;
        # single_writer is how a roll-out hands a volume over, not what an instance sees
        "mounts": [
            {"name": v.name, "path": v.path, "per_instance": v.per_instance}
            for v in sorted(service.volumes, key=lambda v: v.path)
        ],
        "secrets": dict(sorted((secrets or {}).items())),
    }


def _probe_config(probe: ProbeSpec) -> dict[str, Any]:
    """A startup or liveness check with every default resolved (new: no old hash to keep)."""
    kind: dict[str, Any]
    if probe.http is not None:
        kind = {"http": {"path": probe.http.path, "status": probe.http.status}}
    elif probe.tcp:
        kind = {"tcp": True}
    else:
        kind = {"exec": list(probe.exec_ or [])}
    return {
        **kind,
        "interval": probe.interval,
        "timeout": probe.timeout,
        "failure_threshold": probe.failure_threshold,
    }


def config_hash(config: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(config).encode()).hexdigest()


@dataclass(frozen=True)
class ReleaseKey:
    """Identity of a release: equal keys are the same release (law 3)."""

    image_digest: str
    config_hash: str


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"env": {"A": "1"}}` → `{"env.A": "1"}`: the attribute names a plan shows."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == "v":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat
