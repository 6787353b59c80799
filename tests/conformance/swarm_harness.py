"""The Swarm harness of the driver conformance suite: the swarm driver on the lab's real 3-node
swarm (tests/swarm_lab.py), with the Docker harness's busybox test image, which the driver
loads into every node's engine itself (no registry).

Project names get a random suffix (the lab is shared by the session's tests). Cleanup stops
and forgets what the drivers see, then removes by id every service and secret labelled with
this harness's projects (only this harness can have made them).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from corral.drivers.docker_common import LABEL
from corral.drivers.protocol import Driver, ObservedInstance
from corral.drivers.swarm import SwarmDriver
from tests.conformance.docker_harness import BusyboxHarness
from tests.swarm_lab import SwarmLab


def lab_settings(lab: SwarmLab) -> dict[str, Any]:
    """The `swarm:` settings of a spec that runs on `lab`."""
    return {"manager": lab.manager, "node_engines": lab.node_engines}


class SwarmHarness(BusyboxHarness):
    kind = "swarm"

    def __init__(self, tmp_path: Path, lab: SwarmLab) -> None:
        super().__init__(tmp_path)
        self.lab = lab
        self.address_prefix = ".".join(lab.manager_node.ip.split(".")[:3]) + "."  # the lab's subnet

    def make(self, project: str, environment: str, **options: Any) -> SwarmDriver:
        return SwarmDriver(
            self.home, project, environment, self.store, settings=lab_settings(self.lab), **options
        )

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

    async def cleanup(self) -> None:
        try:
            await self.stop_instances()
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
