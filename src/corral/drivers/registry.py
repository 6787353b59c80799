"""Drivers by name, as a spec or a flag names them. Implementations are imported lazily, so a
driver's optional dependencies (the docker SDK, later) are only needed when it is used."""

from __future__ import annotations

from typing import Any

from corral.drivers.protocol import Driver
from corral.errors import UsageError

KNOWN_DRIVERS = ("local", "docker", "swarm", "kubernetes", "memory")
PLANNED_DRIVERS: tuple[str, ...] = ()  # each moves to KNOWN_DRIVERS when it lands


def create_driver(name: str, **kwargs: Any) -> Driver:
    """The driver called `name`, built with `kwargs` (its constructor's arguments).

    local:  home, project, environment, resolve_image[, startup_check]
    docker: home, project, environment, images[, client, startup_check]
    swarm:  home, project, environment, images[, settings (manager, node_engines), startup_check]
    kubernetes: home, project, environment[, images, settings (namespace, kubeconfig,
                context, image_registry, gateway, storage_class, volume_size), startup_check]
    memory: [project, environment, host, clock]
    """
    if name == "local":
        from corral.drivers.local import LocalDriver

        return LocalDriver(**kwargs)
    if name == "docker":
        from corral.drivers.docker import DockerDriver

        return DockerDriver(**kwargs)
    if name == "swarm":
        from corral.drivers.swarm import SwarmDriver

        return SwarmDriver(**kwargs)
    if name == "kubernetes":
        from corral.drivers.kubernetes import KubernetesDriver

        return KubernetesDriver(**kwargs)
    if name == "memory":
        from corral.drivers.memory import InMemoryDriver

        return InMemoryDriver(**kwargs)
    later = f" ({', '.join(PLANNED_DRIVERS)} come later)" if PLANNED_DRIVERS else ""
    hint = f"Use one of: {', '.join(KNOWN_DRIVERS)}{later}."
    if name in PLANNED_DRIVERS:
        raise UsageError(f"the {name!r} driver is not available yet", hint=hint)
    raise UsageError(f"unknown driver {name!r}", hint=hint)
