"""An in-memory `Driver` for logic tests: no processes, deterministic, with knobs to simulate
what real runtimes do (a crash, a start that fails, an engine moving an instance).

It passes the same conformance suite as the real drivers. Drivers that share a `MemoryHost`
see the same instances, as two agents on one machine would: a new driver on the same host
"adopts" what an older one started (the in-memory twin of an agent restart).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from corral.drivers.protocol import (
    ExecResult,
    LaunchSpec,
    ObservedInstance,
    ObservedState,
    exec_output,
)
from corral.errors import DriverError

FIRST_PORT = 41000  # fake addresses are 127.0.0.1:41000, :41001, … in start order


_Key = tuple[str, str, str]  # (project, environment, instance id): ids are unique per scope


@dataclass
class MemoryHost:
    """What the fake runtime holds; share one between drivers to simulate a restart."""

    instances: dict[_Key, ObservedInstance] = field(default_factory=dict)
    used_ids: set[_Key] = field(default_factory=set)  # every id ever started: never reused
    next_port: int = FIRST_PORT
    files: dict[_Key, dict[str, str]] = field(default_factory=dict)  # each instance's own files
    envs: dict[_Key, tuple[dict[str, str], list[str]]] = field(default_factory=dict)  # env, secrets


class InMemoryDriver:
    """A `Driver` with no processes. Deterministic: addresses and driver refs follow the order
    of starts; `clock` gives `started_at` (pass a fake one for fully repeatable output)."""

    name = "memory"

    def __init__(
        self,
        project: str = "test",
        environment: str = "test",
        *,
        host: MemoryHost | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.project = project
        self.environment = environment
        self.host = host if host is not None else MemoryHost()
        self._clock = clock
        self._fail_next: str | None = None
        self.calls: list[tuple[str, str]] = []  # ("start" | "stop" | "forget", id), in order

    # -- knobs for tests ----------------------------------------------------------------------

    def crash(self, instance_id: str, exit_code: int = 137) -> None:
        """The instance dies on its own (as after `kill -9`: exit code 137)."""
        key = self._key(instance_id)
        if key not in self.host.instances:
            raise KeyError(f"no instance {instance_id!r} in {self.project}/{self.environment}")
        self.host.instances[key] = _ended(self.host.instances[key], exit_code)

    def away(self, instance_id: str, exit_code: int | None = None) -> None:
        """The engine is bringing the instance back (Swarm: its task crashed, or its node was
        lost): PENDING, with no address, until `reschedule`."""
        key = self._key(instance_id)
        seen = self.host.instances[key]
        self.host.instances[key] = replace(
            seen, state=ObservedState.PENDING, address=None, exit_code=exit_code
        )

    def reschedule(self, instance_id: str) -> str:
        """The engine runs the instance again, at a new address (another node or port); that
        address is returned."""
        key = self._key(instance_id)
        port = self.host.next_port
        self.host.next_port += 1
        self.host.instances[key] = replace(
            self.host.instances[key],
            state=ObservedState.RUNNING,
            address=f"127.0.0.1:{port}",
            driver_ref=f"memory:{port - FIRST_PORT + 1}",
            exit_code=None,
        )
        return f"127.0.0.1:{port}"

    def fail_next_start(self, message: str = "simulated start failure") -> None:
        """Make the next `start` raise DriverError (and leave nothing behind)."""
        self._fail_next = message

    def write_file(self, instance_id: str, path: str, text: str = "") -> None:
        """A file appears inside the instance (as if its app wrote it): exec checks see it."""
        self.host.files.setdefault(self._key(instance_id), {})[path] = text

    def remove_file(self, instance_id: str, path: str) -> None:
        self.host.files.get(self._key(instance_id), {}).pop(path, None)

    # -- the Driver interface -----------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> ObservedInstance:
        self.calls.append(("start", spec.instance_id))
        if (spec.project, spec.environment) != (self.project, self.environment):
            raise DriverError(
                f"{spec.instance_id} belongs to {spec.project}/{spec.environment}, but this "
                f"driver runs {self.project}/{self.environment}"
            )
        # Stricter than a real runtime, which can only see ids still on disk: any reuse is a
        # caller's bug worth catching in logic tests.
        key = self._key(spec.instance_id)
        if key in self.host.used_ids:
            raise DriverError(
                f"instance id {spec.instance_id!r} was already used: instance ids are never reused"
            )
        if self._fail_next is not None:
            message, self._fail_next = self._fail_next, None
            raise DriverError(f"{spec.instance_id}: {message}")
        self.host.used_ids.add(key)
        port = self.host.next_port
        self.host.next_port += 1
        observed = ObservedInstance(
            instance_id=spec.instance_id,
            service=spec.service,
            serial=spec.serial,
            release=spec.release,
            state=ObservedState.RUNNING,
            address=f"127.0.0.1:{port}",
            driver_ref=f"memory:{port - FIRST_PORT + 1}",
            image_digest=spec.image_digest,
            started_at=self._clock(),
        )
        self.host.instances[key] = observed
        secrets = {name: value for name, (value, _) in spec.secrets.items()}
        self.host.envs[key] = ({**spec.env, **secrets}, list(secrets.values()))
        return observed

    async def stop(self, instance_id: str, *, grace: float) -> None:
        self.calls.append(("stop", instance_id))
        key = self._key(instance_id)
        seen = self.host.instances.get(key)
        if seen is not None and seen.state is ObservedState.RUNNING:
            self.host.instances[key] = _ended(seen, 0)  # a well-behaved app exits on SIGTERM

    async def observe(self) -> list[ObservedInstance]:
        scope = (self.project, self.environment)
        seen = [o for key, o in self.host.instances.items() if key[:2] == scope]
        return sorted(seen, key=lambda o: (o.service, o.serial, o.instance_id))

    async def forget(self, instance_id: str) -> None:
        self.calls.append(("forget", instance_id))
        key = self._key(instance_id)
        seen = self.host.instances.get(key)
        if seen is None:
            return
        if seen.state is ObservedState.RUNNING:
            raise DriverError(f"{instance_id} is still running; it cannot be forgotten")
        del self.host.instances[key]
        self.host.files.pop(key, None)
        self.host.envs.pop(key, None)

    def log_path(self, instance_id: str) -> Path | None:
        return None  # nothing runs, nothing is logged

    async def exec(self, instance_id: str, argv: list[str], timeout: float) -> ExecResult:
        """A tiny shell of its own, over the instance's fake files: `true`, `false`,
        `echo ARGS`, `env`, `printenv NAME`, `test -e|-f PATH`, `cat PATH`, `sleep SECONDS` (never
        sleeps: longer than `timeout` is a timeout) and `exit CODE`; anything else is 127."""
        self.calls.append(("exec", instance_id))
        key = self._key(instance_id)
        seen = self.host.instances.get(key)
        if seen is None or seen.state is not ObservedState.RUNNING:
            raise DriverError(f"{instance_id} is not running: there is nothing to run a command in")
        env, secrets = self.host.envs.get(key, ({}, []))
        code, out = _fake_shell(argv, self.host.files.get(key, {}), env, timeout)
        return ExecResult(code, exec_output(out.encode(), secrets), timed_out=code == 124)

    def _key(self, instance_id: str) -> _Key:
        return (self.project, self.environment, instance_id)


def _ended(observed: ObservedInstance, exit_code: int) -> ObservedInstance:
    return replace(observed, state=ObservedState.EXITED, address=None, exit_code=exit_code)


def _fake_shell(
    argv: list[str], files: dict[str, str], env: dict[str, str], timeout: float
) -> tuple[int, str]:
    name, args = (argv[0].rsplit("/", 1)[-1], argv[1:]) if argv else ("", [])
    if name in ("true", "false"):
        return (0 if name == "true" else 1), ""
    if name == "echo":
        return 0, " ".join(args) + "\n"
    if name == "env" and not args:
        return 0, "".join(f"{k}={v}\n" for k, v in sorted(env.items()))
    if name == "printenv" and args:
        return (0, env[args[0]] + "\n") if args[0] in env else (1, "")
    if name == "test" and len(args) == 2 and args[0] in ("-e", "-f"):
        return (0 if args[1] in files else 1), ""
    if name == "cat" and args:
        missing = [a for a in args if a not in files]
        if missing:
            return 1, f"cat: {missing[0]}: No such file or directory\n"
        return 0, "".join(files[a] for a in args)
    if name == "sleep" and args:
        return (124, "") if float(args[0]) > timeout else (0, "")
    if name == "exit":
        return int(args[0]) if args else 0, ""
    return 127, f"{argv[0] if argv else '(empty)'}: not found\n"
