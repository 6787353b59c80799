"""What the docker and swarm drivers share: the Driver interface over the Docker SDK, and what
they give each instance alike (corral's labels, the environment it runs with), so an instance
looks the same to people, tools and the auditor whichever of the two engines started it."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from corral.drivers.docker_engine import sdk
from corral.drivers.instance_files import InstanceRecords, check_owner
from corral.drivers.protocol import LaunchSpec, ObservedInstance
from corral.images.store import ImageStore
from corral.logs.retention import LogPolicy, Sweeper
from corral.paths import Home

LABEL = "io.corral."
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # usable in engines' names


class SdkDriver:
    """The Driver interface over a synchronous SDK: every call runs in a worker thread, so the
    agent's event loop (and the router on it) never waits on an engine. A subclass does the
    work in `_start`, `_stop`, `_observe` and `_forget`; `_book` keeps its records."""

    _record: str  # the name of the record file in each instance's directory
    _runs: str  # what a record names, for the hint of one that cannot be read

    def __init__(
        self,
        home: Path,
        project: str,
        environment: str,
        images: ImageStore,
        log_policy: LogPolicy | None = None,
    ) -> None:
        sdk()  # a missing SDK is a usage problem (exit 2), found before anything starts
        self._home = Home(Path(home))
        self.project = project
        self.environment = environment
        self._images = images
        self._book = InstanceRecords(
            self._home, project, environment, self._record, ID_PATTERN, runs=self._runs
        )
        # copies of the engine's logs rotate by size; logs of instances forgotten longer than
        # max_age go (retention, corral.logs)
        self.log_policy = log_policy or LogPolicy()
        self._log_sweeper = Sweeper(self._book.logs_root, self.log_policy)

    async def start(self, spec: LaunchSpec) -> ObservedInstance:
        check_owner(spec, self.project, self.environment)
        self._check_spec(spec)
        return await asyncio.to_thread(self._start, spec)

    async def stop(self, instance_id: str, *, grace: float) -> None:
        await asyncio.to_thread(self._stop, instance_id, grace)

    async def observe(self) -> list[ObservedInstance]:
        seen = await asyncio.to_thread(self._observe)
        return sorted(seen, key=lambda o: (o.service, o.serial, o.instance_id))

    async def forget(self, instance_id: str) -> None:
        await asyncio.to_thread(self._forget, instance_id)

    def log_path(self, instance_id: str) -> Path | None:
        return self._book.log_path(instance_id)  # forgotten ones too

    def _check_spec(self, spec: LaunchSpec) -> None:
        """What else makes `spec` one this driver cannot start (its owner is checked)."""
        raise NotImplementedError

    def _start(self, spec: LaunchSpec) -> ObservedInstance:
        raise NotImplementedError

    def _stop(self, instance_id: str, grace: float) -> None:
        raise NotImplementedError

    def _observe(self) -> list[ObservedInstance]:
        raise NotImplementedError

    def _forget(self, instance_id: str) -> None:
        raise NotImplementedError


def labels(spec: LaunchSpec) -> dict[str, str]:
    """What makes a container recognisable as corral's (not what makes it corral's)."""
    return {
        LABEL + "project": spec.project,
        LABEL + "environment": spec.environment,
        LABEL + "service": spec.service,
        LABEL + "release": f"r{spec.release}",
        LABEL + "instance": spec.instance_id,
        LABEL + "serial": str(spec.serial),
        LABEL + "image": spec.image_digest,
    }


def instance_env(spec: LaunchSpec) -> dict[str, str]:
    """On top of the image's env (the engine merges it). corral's own variables are set last,
    so the service cannot override them; the names are the local driver's."""
    return {
        **spec.env,
        # `as: env` secrets: visible to `docker inspect` (the spec's docs say so)
        **{n: v for n, (v, as_) in spec.secrets.items() if as_ == "env"},
        "PORT": str(spec.port),
        "SCRATCH": "/scratch",
        "CORRAL_INSTANCE": spec.instance_id,
        "CORRAL_SERVICE": spec.service,
        "CORRAL_RELEASE": f"r{spec.release}",
        "CORRAL_SERIAL": str(spec.serial),
    }
