"""The `Driver` interface: the runtime that starts, stops and observes instances.

Every implementation passes tests/conformance/test_driver.py. A driver knows nothing of
strategies, routers or releases beyond the labels it is given: it is told to start an instance
with a `LaunchSpec` and reports what it sees. It must not change a running instance (law 1).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


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
    # the release's canonical config (health checks, secret references and versions; never
    # values): what a driver that hands checks to its engine (kubernetes) builds them from
    config: dict[str, Any] = field(default_factory=dict, repr=False)


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
    # not running, but the engine is bringing it back on its own (a distributed engine
    # restarting it, or rescheduling it off a lost node): out of routing until it runs again,
    # maybe at another address (exit_code: of the run that ended, when known)
    PENDING = "pending"


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
    node: str | None = None  # the host it runs on, for engines that place instances
    detail: str | None = None  # why it is not running, when the driver knows more than a code


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


@runtime_checkable
class SplitsTraffic(Protocol):
    """Optional driver capability: an engine's own traffic layer kept in step with corral's
    router (kubernetes: a Service per release and a Gateway API HTTPRoute). The executor calls
    it after each change of the router's split; a driver without it needs nothing more."""

    async def set_weights(self, service: str, weights: dict[int, int]) -> None:
        """`weights`: release number → its percent of the service's traffic, for every
        release with live instances (all 0 while none is ready); a release left out has been
        retired. Empty: the service is not routed (any route of it goes). Idempotent.

        Raises DriverError when the engine refused; the caller says so and calls again."""
        ...


EXEC_OUTPUT_LIMIT = 4096  # bytes of a command's output kept: enough to say why a check failed


@dataclass(frozen=True)
class ExecResult:
    """How a command run inside an instance ended: its exit code (124 when it timed out,
    127 when it could not be run) and the start of its stdout+stderr (at most
    EXEC_OUTPUT_LIMIT bytes, decoded leniently)."""

    exit_code: int
    output: str
    timed_out: bool = False


@runtime_checkable
class Execs(Protocol):
    """Optional driver capability: run a command inside a running instance (exec checks).

    A driver without it is fine; a spec with an `exec` check is then refused at plan time."""

    async def exec(self, instance_id: str, argv: list[str], timeout: float) -> ExecResult:
        """Run `argv` inside the instance, with its files, env and privileges (no more), and
        return when it ends or `timeout` passes (then it is killed: exit code 124).

        Raises DriverError when the instance does not run."""
        ...


EXEC_READ_LIMIT = 16 * EXEC_OUTPUT_LIMIT  # read this much, redact, then keep the first part


def exec_output(data: bytes, secrets: Iterable[str] = ()) -> str:
    """A command's output as kept: secret values replaced by `***` (law 5: a check may print
    its env), then cut to EXEC_OUTPUT_LIMIT bytes."""
    text = data.decode("utf-8", errors="replace")
    for value in sorted({v for v in secrets if v}, key=len, reverse=True):
        text = text.replace(value, "***")
    kept = text.encode()[:EXEC_OUTPUT_LIMIT].decode("utf-8", errors="ignore")
    return kept + (" [truncated]" if len(kept) < len(text) else "")
