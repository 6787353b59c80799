"""The Swarm harness of the driver conformance suite: the swarm driver on the lab's real 3-node
swarm (tests/swarm_lab.py), with the Docker harness's busybox test image, which the driver
loads into every node's engine itself (no registry).

Project names get a random suffix (the lab is shared by the session's tests). Cleanup stops
and forgets what the drivers see, then removes by id every service and secret labelled with
this harness's projects (only this harness can have made them).
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from typing import Any

from corral.drivers.docker import LABEL
from corral.drivers.protocol import Driver, LaunchSpec, ObservedInstance
from corral.drivers.swarm import SwarmDriver
from tests.conformance.docker_harness import bake_test_image
from tests.swarm_lab import SwarmLab


def lab_settings(lab: SwarmLab) -> dict[str, Any]:
    """The `swarm:` settings of a spec that runs on `lab`."""
    return {"manager": lab.manager, "node_engines": lab.node_engines}


class SwarmHarness:
    kind = "swarm"

    def __init__(self, tmp_path: Path, lab: SwarmLab) -> None:
        self.lab = lab
        self.home = tmp_path / "home"
        self.token = secrets.token_hex(4)
        self.store, self.digest = bake_test_image(self.home, tmp_path / "context")
        self.address_prefix = ".".join(lab.manager_node.ip.split(".")[:3]) + "."  # the lab's subnet
        self.drivers: list[SwarmDriver] = []

    def project(self, name: str) -> str:
        return f"{name}-{self.token}"

    def driver(self, environment: str = "test", project: str = "proj", **kwargs: Any) -> Driver:
        options = {k: v for k, v in kwargs.items() if k == "startup_check"}
        made = SwarmDriver(
            self.home,
            self.project(project),
            environment,
            self.store,
            settings=lab_settings(self.lab),
            **options,
        )
        self.drivers.append(made)
        return made

    def spec(self, instance_id: str, **overrides: Any) -> LaunchSpec:
        fields: dict[str, Any] = {
            "instance_id": instance_id,
            "project": "proj",
            "environment": "test",
            "service": "web",
            "serial": 1,
            "release": 1,
            "image_digest": self.digest,
            "command": None,
        }
        fields.update(overrides)
        fields["project"] = self.project(fields["project"])
        return LaunchSpec(**fields)

    async def crash(self, driver: Driver, observed: ObservedInstance) -> None:
        """SIGKILL to the task's container, on whichever node runs it."""
        project = self.project("proj")
        wanted = {"label": [f"{LABEL}instance={observed.instance_id}", f"{LABEL}project={project}"]}
        killed = 0
        for node in self.lab.nodes:
            client = node.client()
            try:
                for container in client.api.containers(filters=wanted):
                    client.api.kill(container["Id"])
                    killed += 1
            finally:
                client.close()
        assert killed == 1, f"found {killed} containers of {observed.instance_id}"

    def failing_spec(self, driver: Driver, instance_id: str) -> LaunchSpec:
        return self.spec(instance_id, command=["/bin/sh", "-c", "echo boom >&2; exit 3"])

    async def start_elsewhere(self, spec: LaunchSpec) -> None:
        other = SwarmDriver(
            self.home, spec.project, spec.environment, self.store, settings=lab_settings(self.lab)
        )
        try:
            await other.start(spec)
        finally:
            other.close()  # and the driver object is dropped, as a dead agent's

    async def cleanup(self) -> None:
        try:
            for driver in self.drivers:
                for observed in await driver.observe():
                    await driver.stop(observed.instance_id, grace=0)
                    await driver.forget(observed.instance_id)
        finally:
            client = self.lab.manager_node.client()
            try:
                for project in ("proj", "elsewhere"):
                    mine = {"label": f"{LABEL}project={self.project(project)}"}
                    for service in client.api.services(filters=mine):
                        with contextlib.suppress(Exception):
                            client.api.remove_service(service["ID"])
                    for secret in client.api.secrets(filters=mine):
                        with contextlib.suppress(Exception):
                            client.api.remove_secret(secret["ID"])
            finally:
                client.close()
            for driver in self.drivers:
                driver.close()
