"""Law 4 on the docker driver: a named volume, labelled, outlives the containers mounting it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.drivers.docker import LABEL
from corral.drivers.docker_volumes import list_volumes, remove, volume_name
from corral.drivers.protocol import Mount
from tests.conformance.docker_harness import DockerHarness, engine_unavailable
from tests.conformance.test_docker_driver import log_text

NO_DOCKER = engine_unavailable()
pytestmark = [pytest.mark.docker, pytest.mark.skipif(bool(NO_DOCKER), reason=str(NO_DOCKER))]

WRITE = [
    "/bin/sh",
    "-c",
    "cat /data/f 2>/dev/null; echo by-$CORRAL_INSTANCE >> /data/f; echo done; exec sleep 60",
]


@pytest.fixture
async def docker(tmp_path: Path) -> AsyncIterator[DockerHarness]:
    made = DockerHarness(tmp_path)
    try:
        yield made
    finally:
        await made.cleanup()


async def test_a_named_volume_survives_container_replacement(docker: DockerHarness) -> None:
    driver = docker.driver()
    mount = Mount("data", "/data", serial=2)
    first = docker.spec("web-1", serial=2, command=WRITE, mounts=[mount])
    await driver.start(first)
    assert "by-web-1" not in await log_text(driver, "web-1", "done")
    await driver.stop("web-1", grace=0)
    await driver.forget("web-1")  # the container is gone; its volume is not

    name = volume_name(first.project, "test", mount)
    labels = docker.client.api.inspect_volume(name)["Labels"]
    assert (labels[LABEL + "volume"], labels[LABEL + "serial"]) == ("data", "2")

    await driver.start(docker.spec("web-2", serial=2, command=WRITE, mounts=[mount]))
    assert "by-web-1" in await log_text(driver, "web-2", "done")  # read what web-1 wrote
    await driver.stop("web-2", grace=0)
    await driver.forget("web-2")

    [info] = list_volumes(docker.client.api, first.project, "test")
    assert (info.name, info.serial, info.location) == ("data", 2, name)
    assert remove(docker.client.api, first.project, "test", "data") == [name]
    assert list_volumes(docker.client.api, first.project, "test") == []
