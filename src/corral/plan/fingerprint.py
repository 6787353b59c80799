"""A digest of the recorded state a plan was made from, to refuse applying a stale saved plan.

It covers what an apply would act on: each service's current release (number, digest, config
hash), replicas, settings, the number a new release would get, and its live instances with
their release. It leaves out observations (they change all the time and are looked at again
when applying) and the instances' transient states (pending → running happens under the lock of
the apply that made them, and any heal gives new instance ids anyway).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from corral.plan.model import RecordedService
from corral.releases import canonical_json

FINGERPRINT_VERSION = 1


def fingerprint(recorded: Sequence[RecordedService]) -> str:
    """`sha256:<hex>` of the canonical recorded state; independent of the input's order."""
    services = [_canonical(service) for service in sorted(recorded, key=lambda s: s.name)]
    text = canonical_json({"v": FINGERPRINT_VERSION, "services": services})
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _canonical(service: RecordedService) -> dict[str, Any]:
    current = service.current
    return {
        "name": service.name,
        "current": None
        if current is None
        else [current.number, current.image_digest, current.config_hash],
        "replicas": service.replicas,
        "settings": service.settings,
        "next_release": service.next_release_number,
        "instances": sorted([i.id, i.release] for i in service.instances),
    }
