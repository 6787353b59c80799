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

from tests.conformance.docker_harness import APPLETS, BUSYBOX, engine_unavailable
from tests.e2e.conftest import CORRAL, free_port, processes_of

NO_DOCKER = engine_unavailable()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.docker,
    pytest.mark.skipif(bool(NO_DOCKER), reason=str(NO_DOCKER)),
]

SERVE = """#!/bin/sh
mkdir -p /tmp/www
printf ok > /tmp/www/healthz
printf '%s %s' "$(cat /app/VERSION)" "$CORRAL_INSTANCE" > /tmp/www/index.html
echo "serving $(cat /app/VERSION) as $CORRAL_INSTANCE"
exec httpd -f -p "$PORT" -h /tmp/www
"""

SPEC = """project: {project}
driver: docker
images:
  app:
    from: scratch
    copy:
      - src: rootfs
        dest: /
    cmd: ["/app/serve.sh"]
services:
  web:
    image: app
    replicas: 2
    port: 8080
    health:
      http: {{path: /healthz}}
      interval: 100ms
      start_timeout: 10s
    route:
      port: {port}
    stop_grace: 2s
    drain_timeout: 1s
"""


class DockerFleet:
    def __init__(self, home: Path) -> None:
        import docker

        self.home = home
        self.dir = home / "work"
        self.project = f"dk{secrets.token_hex(4)}"
        self.port = free_port()
        rootfs = self.dir / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for applet in APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
        (rootfs / "app").mkdir()
        (rootfs / "app" / "serve.sh").write_text(SERVE)
        (rootfs / "app" / "serve.sh").chmod(0o755)
        self.set_version("v1")
        (self.dir / "corral.yaml").write_text(SPEC.format(project=self.project, port=self.port))
        self.env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_AGENT_TICK": "0.2"}
        self.env.pop("CORRAL_STATE_URL", None)
        self.client = docker.from_env(version="auto", timeout=60)

    def set_version(self, version: str) -> None:
        (self.dir / "rootfs" / "app" / "VERSION").write_text(version)

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
                seen.add(http.get(f"http://127.0.0.1:{self.port}/").text.split()[0])
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


@pytest.fixture
def fleet() -> Iterator[DockerFleet]:
    home = Path(tempfile.mkdtemp(prefix="c-", dir="/tmp"))
    made = DockerFleet(home)
    try:
        yield made
    finally:
        made.teardown()
        shutil.rmtree(home, ignore_errors=True)


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
