"""The `Driver` interface: the runtime that starts, stops and observes instances.

Every implementation passes tests/conformance/test_driver.py. A driver knows nothing of
strategies, routers or releases beyond the labels it is given: it is told to start an instance
with a `LaunchSpec` and reports what it sees. It must not change a running instance (law 1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Mount:
    """A named volume mounted read-write at `path` (law 4: it outlives the instance).

    `serial` is the instance serial whose own copy this is (a `per_instance` volume, like a
    StatefulSet claim), or None for the one volume the service's instances share."""

    name: str
    path: str
    serial: int | None = None


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one instance. Built from a release; never mutated."""

    instance_id: str  # unique, never reused; names the instance's files/container
    project: str
    environment: str
    service: str
    serial: int
    release: int
    image_digest: str  # OCI manifest digest in the image store
    command: list[str] | None  # None: the image's cmd
    env: dict[str, str] = field(default_factory=dict)
    port: int = 8080  # port the app listens on (the local driver substitutes a free one)
    # name → (value, "file" | "env"): resolved at launch, never written to any file corral
    # keeps nor shown in a repr (law 5); "file" is /run/secrets/NAME on a tmpfs, mode 0400
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    mounts: list[Mount] = field(default_factory=list)  # volumes, created on first use


@dataclass(frozen=True)
class ImageRuntime:
    """What a driver needs from the image store to run an image on this host.

    The image store provides it (by manifest digest); drivers only read `rootfs`, never write it
    (law 1)."""

    rootfs: Path  # the image's files, unpacked
    cmd: list[str] = field(default_factory=list)  # default command (LaunchSpec.command wins)
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    has_os: bool = True  # False (`from: scratch`): the host's runtime is lent read-only


class ObservedState(enum.StrEnum):
    RUNNING = "running"
    EXITED = "exited"  # process/container ended (exit_code when known)


@dataclass(frozen=True)
class ObservedInstance:
    """What the runtime shows for one instance the driver started."""

    instance_id: str
    service: str
    serial: int
    release: int
    state: ObservedState
    address: str | None  # "127.0.0.1:PORT" where it listens
    driver_ref: str  # pid:start-time, container id, …
    image_digest: str
    exit_code: int | None = None
    started_at: float = 0.0


class Driver(Protocol):
    name: str

    async def start(self, spec: LaunchSpec) -> ObservedInstance:
        """Start the instance and return as soon as it runs (not necessarily ready).

        Raises DriverError if it could not be started (and leaves nothing behind)."""
        ...

    async def stop(self, instance_id: str, *, grace: float) -> None:
        """SIGTERM (or the engine's equivalent), then kill after `grace`; idempotent.

        Leaves nothing of the instance running; its logs are kept."""
        ...

    async def observe(self) -> list[ObservedInstance]:
        """Every instance this driver started for its (project, environment), running or not.

        Exited ones stay listed until `forget` so that plan/heal can see them."""
        ...

    async def forget(self, instance_id: str) -> None:
        """Drop what is left of an exited instance (not its logs)."""
        ...

    def log_path(self, instance_id: str) -> Path | None:
        """Where the instance's stdout/stderr are collected, if on this host."""
        ...
