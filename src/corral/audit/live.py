"""The instances an audit pass covers, each with the start of its report. Reads the store."""

from __future__ import annotations

from corral.audit.report import InstanceFinding
from corral.state.protocol import StateStore
from corral.state.records import InstanceRecord, Release


def live_instances(
    store: StateStore, service: str | None = None
) -> list[tuple[InstanceRecord, InstanceFinding]]:
    """Every live instance recorded in `store` (of `service`, or all), with a finding naming
    its service, release and image; each release is read once."""
    releases: dict[tuple[str, int], Release | None] = {}
    found = []
    for record in store.list_instances(service):
        key = (record.service, record.release)
        if key not in releases:
            releases[key] = store.get_release(*key)
        release = releases[key]
        base = InstanceFinding(
            instance_id=record.id,
            service=record.service,
            release=record.release,
            image_digest=release.image_digest if release else "",
        )
        found.append((record, base))
    return found
