"""`as: file` secrets as Swarm secrets (law 5: the value lives only in the swarm's encrypted
Raft store and in each task's tmpfs /run/secrets, never in a file corral keeps).

One Swarm secret per (service, release, secret name): a release pins the version of each of
its secrets, so every instance of a release shares one Swarm secret and a rotation (a new
release) makes a new one. Swarm never shows a secret's value, so an existing secret is reused
by name; a secret is removed once no service uses it (Swarm refuses while one does).
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from corral.drivers.docker_engine import engine_call, is_not_found, sdk
from corral.drivers.protocol import LaunchSpec

LABEL = "io.corral."
NAME_LIMIT = 64  # Swarm's longest secret name
FILE_MODE = 0o400

# Creating a secret and the service that uses it, and removing a service and then its unused
# secrets, must not interleave (a removal between the two would take a secret just made).
SECRETS_LOCK = threading.Lock()


def secret_name(spec: LaunchSpec, name: str) -> str:
    base = f"corral-{spec.project}-{spec.environment}-{spec.service}-r{spec.release}-{name}"
    if len(base) <= NAME_LIMIT:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:12]
    return f"{base[: NAME_LIMIT - 13]}-{digest}"


def secret_labels(spec: LaunchSpec, name: str) -> dict[str, str]:
    return {
        LABEL + "project": spec.project,
        LABEL + "environment": spec.environment,
        LABEL + "service": spec.service,
        LABEL + "release": f"r{spec.release}",
        LABEL + "secret": name,
    }


def file_secrets(api: Any, spec: LaunchSpec) -> list[Any]:
    """SecretReferences for the spec's `as: file` secrets, each created when missing; call
    under SECRETS_LOCK together with the service's creation."""
    SecretReference = sdk().types.SecretReference
    refs = []
    for name, (value, as_) in sorted(spec.secrets.items()):
        if as_ != "file":
            continue
        swarm_name = secret_name(spec, name)
        secret_id = _find(api, swarm_name)
        if secret_id is None:
            with engine_call(f"create swarm secret {swarm_name}"):
                created = api.create_secret(
                    swarm_name, value.encode(), labels=secret_labels(spec, name)
                )
            secret_id = str(created["ID"])
        refs.append(
            SecretReference(secret_id, swarm_name, filename=name, uid="0", gid="0", mode=FILE_MODE)
        )
    return refs


def remove_unused(api: Any, names: list[str]) -> None:
    """Remove the Swarm secrets `names` that no service uses any more; call under SECRETS_LOCK
    after the service that used them is gone."""
    for swarm_name in names:
        secret_id = _find(api, swarm_name)
        if secret_id is None:
            continue
        try:
            with engine_call(f"remove swarm secret {swarm_name}"):
                api.remove_secret(secret_id)
        except Exception as exc:  # still in use by another instance of its release: kept
            if not is_not_found(exc) and "in use" not in str(exc):
                raise


def _find(api: Any, swarm_name: str) -> str | None:
    with engine_call(f"look up swarm secret {swarm_name}"):
        found = api.secrets(filters={"name": swarm_name})
    for secret in found:  # the name filter matches prefixes too
        if secret.get("Spec", {}).get("Name") == swarm_name:
            return str(secret["ID"])
    return None
