"""Docker named volumes for corral's `volumes:` (law 4: they outlive every container).

A volume is created on first mount with labels naming its project, environment, volume and
serial; containers are removed on stop, their volumes never are. Only `corral volume rm`
(through `remove`) deletes one, and only volumes carrying this project's labels.
"""

from __future__ import annotations

from typing import Any

from corral.drivers.docker_engine import engine_call, is_not_found
from corral.drivers.protocol import Mount
from corral.volumes import VolumeInfo

LABEL = "io.corral."


def volume_name(project: str, environment: str, mount: Mount) -> str:
    base = f"corral-{project}-{environment}-{mount.name}"
    return base if mount.serial is None else f"{base}-{mount.serial}"


def volume_labels(project: str, environment: str, mount: Mount) -> dict[str, str]:
    return {
        LABEL + "project": project,
        LABEL + "environment": environment,
        LABEL + "volume": mount.name,
        LABEL + "serial": "" if mount.serial is None else str(mount.serial),
    }


def ensure(api: Any, project: str, environment: str, mount: Mount) -> str:
    """The volume's name, creating it (labelled) when it does not exist yet."""
    name = volume_name(project, environment, mount)
    try:
        with engine_call(f"inspect volume {name}"):
            api.inspect_volume(name)
        return name
    except Exception as exc:  # engine_call passes NotFound through: then it is created
        if not is_not_found(exc):
            raise
    with engine_call(f"create volume {name}"):
        api.create_volume(name=name, labels=volume_labels(project, environment, mount))
    return name


def list_volumes(api: Any, project: str, environment: str) -> list[VolumeInfo]:
    filters = {"label": [f"{LABEL}project={project}", f"{LABEL}environment={environment}"]}
    with engine_call("list volumes"):
        found = api.volumes(filters=filters).get("Volumes") or []
    infos = []
    for volume in found:
        labels = volume.get("Labels") or {}
        serial = labels.get(LABEL + "serial") or ""
        infos.append(
            VolumeInfo(
                name=str(labels.get(LABEL + "volume", "")),
                serial=int(serial) if serial.isdigit() else None,
                location=str(volume["Name"]),
            )
        )
    return sorted(infos, key=lambda v: (v.name, v.serial if v.serial is not None else -1))


def remove(api: Any, project: str, environment: str, name: str) -> list[str]:
    """Remove every volume (shared and per-serial) named `name` of this project."""
    removed = []
    for info in list_volumes(api, project, environment):
        if info.name == name:
            with engine_call(f"remove volume {info.location}"):
                api.remove_volume(info.location)
            removed.append(info.location)
    return removed
