"""`driver: docker` end to end through the real CLI: apply, serve through the router, roll to
v2, destroy, and no container is left. The image is busybox from Debian's busybox-static,
baked by corral (`from: scratch`) and loaded into the engine by the driver (no registry)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.testing.busybox import DOCKER_ENGINE, fleet_spec, set_version, write_rootfs
from tests.conformance.docker_harness import engine_unavailable
from tests.e2e.conftest import CORRAL, free_port, processes_of

NO_DOCKER = engine_unavailable()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.docker,
    pytest.mark.skipif(bool(NO_DOCKER), reason=str(NO_DOCKER)),
]


class DockerFleet:
    def __init__(self, home: Path) -> None:
        import docker

        self.home = home
        self.dir = home / "work"
        self.project = f"dk{secrets.token_hex(4)}"
        self.port = free_port()
        write_rootfs(self.dir)
        self.set_version("v1")
        spec = fleet_spec(
            project=self.project, port=self.port, engine=DOCKER_ENGINE, start_timeout="10s"
        )
        (self.dir / "corral.yaml").write_text(spec)
        self.env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_AGENT_TICK": "0.2"}
        self.env.pop("CORRAL_STATE_URL", None)
        self.client = docker.from_env(version="auto", timeout=60)

    def set_version(self, version: str) -> None:
        set_version(self.dir, version)

    def run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CORRAL, *args, "--file", str(self.dir / "corral.yaml")],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, f"corral {' '.join(args)}: {result.stdout}{result.stderr}"
        return result.stdout

    def containers(self) -> list[dict[str, object]]:
        return list(
            self.client.api.containers(
                all=True, filters={"label": f"io.corral.project={self.project}"}
            )
        )

    def versions_served(self, requests: int = 20) -> set[str]:
        seen = set()
        with httpx.Client(trust_env=False, timeout=5.0) as http:
            for _ in range(requests):
                seen.add(http.get(f"http://127.0.0.1:{self.port}/").json()["release"])
        return seen

    def teardown(self) -> None:
        self.run("destroy", timeout=60)
        self.run("agent", "stop", timeout=30)
        for process in processes_of(self.home):
            with contextlib.suppress(OSError):
                os.killpg(process.pid, signal.SIGKILL)
        for container in self.containers():  # only this test's project: unique name
            with contextlib.suppress(Exception):
                self.client.api.remove_container(container["Id"], force=True)
        for image in self.client.api.images():
            for tag in image.get("RepoTags") or []:
                if tag.startswith(f"corral/{self.project}:"):
                    with contextlib.suppress(Exception):
                        self.client.api.remove_image(tag)
        self.client.close()


def docker_fleet() -> Iterator[DockerFleet]:
    """A DockerFleet in a home of its own, torn down even when the test fails."""
    home = Path(tempfile.mkdtemp(prefix="c-", dir="/tmp"))
    made = DockerFleet(home)
    try:
        yield made
    finally:
        made.teardown()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def fleet() -> Iterator[DockerFleet]:
    yield from docker_fleet()


def test_docker_fleet_applies_serves_rolls_and_is_destroyed(fleet: DockerFleet) -> None:
    fleet.ok("apply")
    assert fleet.versions_served() == {"v1"}
    first = {c["Id"] for c in fleet.containers()}
    assert len(first) == 2

    fleet.set_version("v2")
    fleet.ok("apply")
    assert fleet.versions_served() == {"v2"}
    running = fleet.containers()
    assert len(running) == 2 and not first & {c["Id"] for c in running}  # replaced, not changed

    deadline = time.monotonic() + 10  # the agent copies logs on its next observe
    while "serving v2" not in fleet.ok("logs", "web"):
        assert time.monotonic() < deadline
        time.sleep(0.2)

    fleet.ok("destroy")
    assert fleet.containers() == []
    assert "serving v1" in fleet.ok("logs", "web")  # logs outlive the containers
