"""The Docker harness of the driver conformance suite, and the test image it runs.

No registry is reachable, so the image is made here: Debian's static busybox plus a shell
script that serves GET /healthz ("ok") and GET / (the instance id) with busybox httpd, baked by
corral's own ImageStore (`from: scratch`, one `copy:`) and loaded into the engine by the driver.

Every project name gets a random suffix: container names are global to the engine, and other
test runs may use it at the same time. Cleanup removes, by id, every container labelled with
this harness's projects (only this harness can have made them), and the image tags it made.
"""

from __future__ import annotations

import contextlib
import importlib.util
import secrets
import textwrap
from pathlib import Path
from typing import Any

from corral.drivers.docker import LABEL, DockerDriver
from corral.drivers.docker_engine import connect
from corral.drivers.protocol import Driver, LaunchSpec, ObservedInstance
from corral.errors import DriverError
from corral.images.store import ImageStore
from corral.spec.model import ImageSpec
from corral.testing.busybox import BUSYBOX, write_rootfs

SERVE = textwrap.dedent(
    """\
    #!/bin/sh
    echo "hello from $CORRAL_INSTANCE"
    echo "stderr of $CORRAL_INSTANCE" >&2
    mkdir -p /tmp/www
    printf ok > /tmp/www/healthz
    printf %s "$CORRAL_INSTANCE" > /tmp/www/index.html
    exec httpd -f -p "$PORT" -h /tmp/www
    """
)


def engine_unavailable() -> str | None:
    """Why the docker tests cannot run here, or None when they can."""
    if importlib.util.find_spec("docker") is None:
        return "the docker SDK is not installed: pip install 'corral[docker]'"
    if not BUSYBOX.exists():
        return "needs Debian's busybox-static (apt-get install busybox-static)"
    try:  # corral's own check: the SDK leaks the socket of a refused connection
        connect().close()
    except DriverError as exc:
        return f"no Docker engine reachable ({exc}); start dockerd"
    return None


def bake_test_image(home: Path, context: Path, **settings: Any) -> tuple[ImageStore, str]:
    """Bake the busybox test image into the store under `home`; (store, manifest digest)."""
    write_rootfs(context, SERVE)  # its own serve.sh: GET / answers the bare instance id
    recipe = ImageSpec.model_validate(
        {
            "from": "scratch",
            "copy": [{"src": "rootfs", "dest": "/"}],
            "cmd": ["/app/serve.sh"],
            "env": {"FROM_IMAGE": "image", "SHARED": "image"},
            **settings,
        }
    )
    store = ImageStore(home / "images")
    return store, store.bake("busybox-web", recipe, context).digest


class BusyboxHarness:
    """What the engines' harnesses share: the baked test image, this run's project names,
    launch specs, and stopping what their drivers see. `make` builds a driver."""

    kind = ""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.token = secrets.token_hex(4)
        self.store, self.digest = bake_test_image(self.home, tmp_path / "context")
        self.drivers: list[Any] = []

    def make(self, project: str, environment: str, **options: Any) -> Any:
        raise NotImplementedError

    def project(self, name: str) -> str:
        return f"{name}-{self.token}"

    def driver(self, environment: str = "test", project: str = "proj", **kwargs: Any) -> Driver:
        options = {k: v for k, v in kwargs.items() if k in ("startup_check", "log_policy")}
        made = self.make(self.project(project), environment, **options)
        self.drivers.append(made)
        return made  # type: ignore[no-any-return]

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

    def failing_spec(self, driver: Driver, instance_id: str) -> LaunchSpec:
        return self.spec(instance_id, command=["/bin/sh", "-c", "echo boom >&2; exit 3"])

    async def start_elsewhere(self, spec: LaunchSpec) -> None:
        other = self.make(spec.project, spec.environment)
        try:
            await other.start(spec)
        finally:
            other.close()  # and the driver object is dropped, as a dead agent's

    async def stop_instances(self) -> None:
        for driver in self.drivers:
            for observed in await driver.observe():
                await driver.stop(observed.instance_id, grace=0)
                await driver.forget(observed.instance_id)


class DockerHarness(BusyboxHarness):
    kind = "docker"

    def __init__(self, tmp_path: Path) -> None:
        import docker

        super().__init__(tmp_path)
        self.client = docker.from_env(version="1.41", timeout=60)

    def make(self, project: str, environment: str, **options: Any) -> DockerDriver:
        return DockerDriver(self.home, project, environment, self.store, **options)

    async def crash(self, driver: Driver, observed: ObservedInstance) -> None:
        self.client.api.kill(observed.driver_ref)  # SIGKILL to the container's init

    def containers(self) -> list[dict[str, Any]]:
        """Every container of this harness's projects, running or not."""
        found: list[dict[str, Any]] = []
        for project in ("proj", "elsewhere"):
            found += self.client.api.containers(
                all=True, filters={"label": f"{LABEL}project={self.project(project)}"}
            )
        return found

    async def cleanup(self) -> None:
        try:
            await self.stop_instances()
        finally:
            for container in self.containers():
                with contextlib.suppress(Exception):
                    self.client.api.remove_container(container["Id"], force=True)
            for image in self.client.api.images():
                for tag in image.get("RepoTags") or []:
                    if tag.split(":")[0].endswith(self.token):
                        with contextlib.suppress(Exception):  # in use by another run: kept
                            self.client.api.remove_image(tag)
            for volume in self.client.api.volumes().get("Volumes") or []:  # law 4 tests' volumes
                if (volume.get("Labels") or {}).get(f"{LABEL}project", "").endswith(self.token):
                    with contextlib.suppress(Exception):
                        self.client.api.remove_volume(volume["Name"])
            for driver in self.drivers:
                driver.close()
            self.client.close()
