"""Read-only views for the planner: what is recorded (state store) and observed (driver).

The planner is pure; this module does the reading for it and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable

from corral.drivers.protocol import ObservedInstance, ObservedState
from corral.plan.model import (
    ObservedInstanceView,
    RecordedInstance,
    RecordedRelease,
    RecordedService,
)
from corral.state.protocol import StateStore


def recorded_services(store: StateStore) -> list[RecordedService]:
    """Every recorded service with its current release and live instances."""
    services = []
    for service in store.list_services():
        releases = store.list_releases(service.name)
        current = None
        if service.current_release is not None:
            release = store.get_release(service.name, service.current_release)
            if release is not None:
                current = RecordedRelease(
                    number=release.number,
                    image_digest=release.image_digest,
                    config_hash=release.config_hash,
                    config=release.config,
                )
        instances = tuple(
            RecordedInstance(id=i.id, serial=i.serial, release=i.release, state=i.state.value)
            for i in store.list_instances(service.name)
        )
        services.append(
            RecordedService(
                name=service.name,
                current=current,
                replicas=service.replicas,
                settings=service.settings,
                instances=instances,
                next_release_number=max((r.number for r in releases), default=0) + 1,
                releases=tuple(
                    RecordedRelease(
                        number=r.number,
                        image_digest=r.image_digest,
                        config_hash=r.config_hash,
                        config=r.config,
                    )
                    for r in releases
                ),
            )
        )
    return services


def observed_views(observed: Iterable[ObservedInstance]) -> list[ObservedInstanceView]:
    return [
        ObservedInstanceView(
            id=o.instance_id, service=o.service, running=o.state is ObservedState.RUNNING
        )
        for o in observed
    ]
