"""Strangers: containers that wear corral's labels (this project and environment) but that
corral did not start — no record names them. They are reported, never touched: ownership is
what corral recorded, not what a container claims (drivers/docker.py)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LABEL_PREFIX = "io.corral."  # as drivers/docker.py labels its containers


@dataclass(frozen=True)
class Stranger:
    container_id: str
    name: str
    service: str  # as its labels claim
    instance: str  # the instance id its labels claim, maybe one of corral's
    state: str
    image: str

    def render(self) -> str:
        claim = f" (claims {self.service}/{self.instance})" if self.instance else ""
        return f"{self.name} {self.container_id[:12]} {self.state}{claim}"

    def to_json(self) -> dict[str, Any]:
        return {
            "container": self.container_id,
            "name": self.name,
            "service": self.service,
            "instance": self.instance,
            "state": self.state,
            "image": self.image,
        }


def label_filters(project: str, environment: str) -> dict[str, list[str]]:
    return {
        "label": [f"{LABEL_PREFIX}project={project}", f"{LABEL_PREFIX}environment={environment}"]
    }


def find_strangers(
    listed: Iterable[Mapping[str, Any]], owned: Collection[str], creating: Collection[str] = ()
) -> list[Stranger]:
    """The listed containers (the engine's list API shape) whose ids no record holds.
    `creating`: the names of records whose container is being created (no id recorded yet):
    a start in flight is corral's, not a stranger."""
    found = []
    for container in listed:
        names = container.get("Names") or [""]
        if container["Id"] in owned or str(names[0]).lstrip("/") in creating:
            continue
        labels = container.get("Labels") or {}
        found.append(
            Stranger(
                container_id=str(container["Id"]),
                name=str(names[0]).lstrip("/"),
                service=str(labels.get(LABEL_PREFIX + "service", "")),
                instance=str(labels.get(LABEL_PREFIX + "instance", "")),
                state=str(container.get("State", "")),
                image=str(container.get("Image", "")),
            )
        )
    return sorted(found, key=lambda s: (s.name, s.container_id))
