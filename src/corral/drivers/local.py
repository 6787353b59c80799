"""The `local` driver: each instance is a process tree under bubblewrap on this host.

What it keeps, per instance (written ahead of each change, so a `kill -9` at any point leaves
something the next agent can find and clean — law 7):

    instances/<environment>/<project>/<instance_id>/
        launch.json   labels, port, command: written before spawning
        pid           {"pid", "start_time"} of bwrap, and the same of the sandbox's init under
                      "sandbox": written right after spawning
        status        bwrap's own JSON status (child pid, exit code), written by bwrap even when
                      no agent is alive
        scratch/      the only writable dir (`/scratch` inside)
    logs/<environment>/<project>/<service>/<instance_id>.log[.1]
                      stdout+stderr, each line stamped with its time and stream by the
                      instance's log collector (corral.logs.collector, a process of its own
                      that outlives the agent as the instance does); rotated by size/age;
                      kept by forget, removed max_age after the instance is gone

The project is part of both paths because instance ids are unique per (project, environment)
only, and one home may serve several projects.

The process shape, and why signals go where they go:

    bwrap (P: own session, so neither the agent's death nor its terminal reaches it)
      └ sandbox init (I: pid 1 of a new pid namespace; --new-session makes it the leader of
          │            the sandbox's own session and process group)
          └ the app    (in process group I)

P normally lives exactly as long as I and exits with the app's exit code (which it also writes
to `status`). Both are watched: an instance runs while either does (if P alone was killed, the
app still serves until it is stopped). SIGTERM goes to process group I (the app; I ignores it,
being a namespace init without a handler); SIGKILL to I ends every process in the namespace.
P is not sent SIGTERM: it would die without passing it on. Every pid is checked against its
recorded start time before it is signalled, so a recycled pid of a stranger is never hit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from corral.drivers.instance_files import create_instance_dir, launch_fields, write_json
from corral.drivers.protocol import (
    EXEC_READ_LIMIT,
    ExecResult,
    ImageRuntime,
    LaunchSpec,
    Mount,
    ObservedInstance,
    ObservedState,
    exec_output,
)
from corral.errors import DriverError, PrerequisiteError
from corral.logs.retention import LogPolicy, sweep
from corral.paths import Home
from corral.volumes import local_dir

BWRAP_MISSING = "bwrap (bubblewrap) is required by the local driver: apt-get install bubblewrap"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DRIVER_MOUNTS = frozenset({"proc", "dev", "tmp", "scratch"})  # never taken from the image
_HOST_RUNTIME = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")  # besides /usr
# Enough of the host's /etc for name resolution, users and TLS; not /etc/ssl/private.
_HOST_ETC = (
    "ssl/certs",
    "ssl/openssl.cnf",
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "services",
    "protocols",
    "passwd",
    "group",
    "localtime",
)
_CATCHABLE_SIGNALS = tuple(
    sig for sig in signal.valid_signals() if sig not in (signal.SIGKILL, signal.SIGSTOP)
)
_POLL = 0.02  # seconds between looks at a process we wait for
_KILL_WAIT = 5.0  # how long SIGKILL may take to show before we call it a failure
_START_WAIT = 5.0  # how long bwrap may take to create the sandbox
_SANDBOX_EXEC = str(Path(__file__).with_name("sandbox_exec.py"))
_SWEEP_EVERY = 600.0  # seconds between looks for logs of long-gone instances


def sandbox_args(
    image: ImageRuntime,
    *,
    scratch: Path,
    workdir: str,
    volumes: Sequence[tuple[Path, str]] = (),
) -> list[str]:
    """bwrap's options for one instance: the image read-only (law 1), nothing else writable
    but a private /tmp and /scratch, the host's network, its own pid/ipc/uts namespaces."""
    args = ["--tmpfs", "/"]
    own: set[str] = set()
    for entry in sorted(image.rootfs.iterdir()):
        if entry.name in _DRIVER_MOUNTS:
            continue
        own.add(entry.name)
        if entry.is_symlink():  # e.g. an OS image's `bin -> usr/bin`
            args += ["--symlink", os.readlink(entry), f"/{entry.name}"]
        else:
            args += ["--ro-bind", str(entry), f"/{entry.name}"]
    if not image.has_os:
        args += _host_runtime_args(own)
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for source, path in volumes:  # named volumes, read-write (law 4: they outlive us)
        args += ["--bind", str(source), path]
    args += ["--bind", str(scratch), "/scratch", "--remount-ro", "/"]
    args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session"]
    # Running as root must not let the app remount its image writable.
    args += ["--cap-drop", "ALL", "--chdir", workdir]
    return args


def _host_runtime_args(own: set[str]) -> list[str]:
    """Lend the host's runtime, read-only, to an image with no OS of its own (`from: scratch`).
    What the image has itself wins."""
    args: list[str] = []
    if "usr" not in own:
        args += ["--ro-bind", "/usr", "/usr"]
    for name in _HOST_RUNTIME:
        host = Path("/") / name
        if name in own or not os.path.lexists(host):
            continue
        if host.is_symlink():  # merged /usr: `lib -> usr/lib`
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    if "etc" not in own:
        for rel in _HOST_ETC:
            if (Path("/etc") / rel).exists():
                args += ["--ro-bind", f"/etc/{rel}", f"/etc/{rel}"]
    return args


@dataclass(frozen=True)
class _Proc:
    """A process recorded by pid *and* start time: together they name it for good."""

    pid: int
    start_time: float

    def exists(self) -> bool:  # this very process, maybe a zombie
        try:
            return abs(psutil.Process(self.pid).create_time() - self.start_time) < 1e-3
        except psutil.Error:
            return False

    def is_alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            same = abs(proc.create_time() - self.start_time) < 1e-3
            return same and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def reap(self) -> int | None:
        """Collect the exit code if this is our child and it has ended (so it does not linger
        as a zombie); None if it runs, or is not ours to reap."""
        if not self.exists():
            return None
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # started by another process: its parent reaps it
            return None
        return _exit_code(status) if pid else None

    def signal(self, signum: int, *, group: bool) -> None:
        if not self.exists():
            return
        try:
            if group:
                os.killpg(self.pid, signum)
            else:
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise DriverError(f"not allowed to signal process {self.pid}: {exc}") from exc

    @classmethod
    def of(cls, pid: int) -> _Proc | None:
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except psutil.Error:
            return None

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_time": self.start_time}


def _exit_code(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code  # killed by signal N: 128+N, as shells report it


@dataclass(frozen=True)
class _Instance:
    """One instance dir as found on disk."""

    dir: Path
    launch: dict[str, Any]
    bwrap: _Proc | None  # None: no pid file (the driver died between spawning and writing it)
    sandbox: _Proc | None

    @property
    def id(self) -> str:
        return str(self.launch["instance_id"])

    def procs(self) -> list[_Proc]:
        return [p for p in (self.bwrap, self.sandbox) if p is not None]


class LocalDriver:
    """Instances as sandboxed processes on this host; they outlive the agent that started them
    and are adopted by the next one (observe/stop work on any instance dir of this project)."""

    name = "local"

    def __init__(
        self,
        home: Path,
        project: str,
        environment: str,
        resolve_image: Callable[[str], ImageRuntime],
        *,
        startup_check: float = 0.2,
        log_policy: LogPolicy | None = None,
    ) -> None:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise PrerequisiteError(BWRAP_MISSING)
        self._bwrap = bwrap
        self._home = Home(Path(home))
        self.project = project
        self.environment = environment
        self._resolve_image = resolve_image
        self._startup_check = startup_check  # an exit within this window is a failed start
        self.log_policy = log_policy or LogPolicy()
        self._collectors: set[int] = set()  # our children, reaped once they end
        self._swept = 0.0

    # -- the Driver interface -----------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> ObservedInstance:
        self._check_spec(spec)
        image = self._resolve_image(spec.image_digest)
        command = list(spec.command) if spec.command is not None else list(image.cmd)
        if not command:
            raise DriverError(
                f"{spec.instance_id}: image {spec.image_digest} has no default command",
                hint="Give the service a `command:`.",
            )
        if not image.rootfs.is_dir():
            raise DriverError(
                f"{spec.instance_id}: the files of image {spec.image_digest} are missing "
                f"(no directory {image.rootfs})",
                hint="Bake or pull the image again.",
            )
        inst_dir = self._instance_dir(spec.instance_id)
        if os.path.lexists(inst_dir):
            raise DriverError(
                f"instance id {spec.instance_id!r} was already used in "
                f"{self.project}/{self.environment} ({inst_dir}): instance ids are never reused",
                hint="Start the instance under a new id.",
            )
        port = _free_port(self._ports_taken())
        launch = _launch_record(spec, command=command, port=port)
        create_instance_dir(inst_dir, "launch.json", launch)
        try:
            return await self._spawn(spec, image, command, port, inst_dir, launch)
        except BaseException:
            shutil.rmtree(inst_dir, ignore_errors=True)  # a failed start leaves nothing behind
            raise

    async def stop(self, instance_id: str, *, grace: float) -> None:
        inst = self._load(instance_id)
        if inst is None:
            return
        if inst.bwrap is None:
            await _kill_strays(inst.dir)
            return
        if inst.sandbox is not None:
            inst.sandbox.signal(signal.SIGTERM, group=True)
        deadline = time.monotonic() + max(grace, 0.0)
        while self._is_running(inst) and time.monotonic() < deadline:
            await asyncio.sleep(_POLL)
        if self._is_running(inst):
            self._kill(inst)
            await self._wait_ended(inst)
        await self._wait_collector(inst.dir)

    async def _wait_collector(self, inst_dir: Path, seconds: float = 2.0) -> None:
        """The app has ended: give its log collector (bounded) time to write the last lines,
        so that a stop's caller reads them (e.g. "got SIGTERM")."""
        try:
            recorded = json.loads((inst_dir / "pid").read_text()).get("collector")
            collector = _Proc(**recorded) if recorded else None
        except (OSError, ValueError, TypeError):
            return
        deadline = time.monotonic() + seconds
        while collector is not None and time.monotonic() < deadline:
            collector.reap()
            if not collector.is_alive():
                self._collectors.discard(collector.pid)
                return
            await asyncio.sleep(_POLL)

    async def observe(self) -> list[ObservedInstance]:
        self._reap_collectors()
        seen = [self._observed(inst) for inst in self._instances()]
        if time.monotonic() - self._swept > _SWEEP_EVERY:
            self.sweep_logs({o.instance_id for o in seen})
        return sorted(seen, key=lambda o: (o.service, o.serial, o.instance_id))

    async def forget(self, instance_id: str) -> None:
        inst = self._load(instance_id)
        if inst is None:
            return
        if inst.bwrap is None:
            await _kill_strays(inst.dir)
        elif self._is_running(inst):
            raise DriverError(
                f"{instance_id} is still running; it cannot be forgotten",
                hint="Stop it first.",
            )
        shutil.rmtree(inst.dir)

    def sweep_logs(self, live: set[str]) -> int:
        """Remove the logs of instances gone (no instance dir) longer than max_age. `live`
        is every instance dir seen: a live instance's logs are never removed."""
        self._swept = time.monotonic()
        return sweep(self._logs_root(), live, self.log_policy)

    def _reap_collectors(self) -> None:
        for pid in list(self._collectors):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._collectors.discard(pid)

    def log_path(self, instance_id: str) -> Path | None:
        inst = self._load(instance_id)
        if inst is not None:
            return self._log_file(str(inst.launch["service"]), instance_id)
        if not _ID_PATTERN.match(instance_id):
            return None
        # Forgotten instances keep their logs; find them by id.
        found = sorted(self._logs_root().glob(f"*/{instance_id}.log"))
        return found[0] if found else None

    async def exec(self, instance_id: str, argv: list[str], timeout: float) -> ExecResult:
        """Run `argv` inside the instance: sandbox_exec.py joins the namespaces and root of its
        sandbox init (so it sees the app's /tmp, /scratch, volumes and processes), drops every
        capability as bwrap did for the app, and runs it with the app's environment. A fresh
        bwrap on the same image would miss the app's private /tmp: it would not be inside."""
        inst = self._load(instance_id)
        if inst is None or inst.sandbox is None or not inst.sandbox.is_alive():
            raise DriverError(f"{instance_id} is not running: there is nothing to run a command in")
        pid = inst.sandbox.pid
        try:
            env = _environ(pid)
        except OSError as exc:
            raise DriverError(f"{instance_id}: cannot read its environment: {exc}") from exc
        try:
            workdir = self._resolve_image(str(inst.launch["image_digest"])).workdir or "/"
        except Exception:  # an image gone from the store: its root is still mounted, use /
            workdir = "/"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            _SANDBOX_EXEC,
            str(pid),
            workdir,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={},
            start_new_session=True,  # one process group: a timeout kills the command too
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(env).encode())
        proc.stdin.close()
        data = bytearray()
        timed_out = False
        try:
            async with asyncio.timeout(timeout):
                while chunk := await proc.stdout.read(65536):
                    data += chunk[: max(0, EXEC_READ_LIMIT - len(data))]
                code = await proc.wait()
        except TimeoutError:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            code = 124
        secrets = _secret_values(pid, inst.launch, env)
        return ExecResult(code, exec_output(bytes(data), secrets), timed_out=timed_out)

    # -- starting -----------------------------------------------------------------------------

    def _check_spec(self, spec: LaunchSpec) -> None:
        if (spec.project, spec.environment) != (self.project, self.environment):
            raise DriverError(
                f"{spec.instance_id} belongs to {spec.project}/{spec.environment}, but this "
                f"driver runs {self.project}/{self.environment}",
                hint="Start it through the driver of its own project and environment.",
            )
        if not _ID_PATTERN.match(spec.instance_id):
            raise DriverError(
                f"{spec.instance_id!r} is not a usable instance id",
                hint="Use letters, digits, '.', '_' and '-' (at most 128), like `web-7`.",
            )

    async def _spawn(
        self,
        spec: LaunchSpec,
        image: ImageRuntime,
        command: list[str],
        port: int,
        inst_dir: Path,
        launch: dict[str, Any],
    ) -> ObservedInstance:
        scratch = inst_dir / "scratch"
        scratch.mkdir(mode=0o700)
        log = self._log_file(spec.service, spec.instance_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        status = inst_dir / "status"
        volumes = [(self._volume_dir(m), m.path) for m in spec.mounts]
        options = sandbox_args(
            image, scratch=scratch, workdir=image.workdir or "/", volumes=volumes
        )
        env = {**_instance_env(spec, image, port), **_secret_env(spec)}
        fds, options = _with_secret_files(options, spec)
        try:
            outputs, collector = _spawn_collector(log, self.log_policy, spec)
            fds += outputs
            self._collectors.add(collector)
            bwrap = _posix_spawn(self._bwrap, options, command, env, outputs, status=status)
        finally:
            for fd in fds:
                os.close(fd)
        inst = _Instance(inst_dir, launch, bwrap, None)
        try:
            sandbox = await _wait_sandbox(bwrap, status)
            inst = _Instance(inst_dir, launch, bwrap, sandbox)
            collected_by = _Proc.of(collector)
            write_json(
                inst_dir / "pid",
                {
                    **bwrap.to_json(),
                    "sandbox": sandbox and sandbox.to_json(),
                    "collector": collected_by and collected_by.to_json(),
                },
            )
            code = await self._exit_within(inst, self._startup_check)
        except BaseException:
            self._kill(inst)
            await self._wait_ended(inst)
            raise
        if code is not None:
            await _wait_collected(collector)  # so the hint below shows the app's last words
            raise DriverError(
                f"{spec.instance_id}: `{' '.join(command)}` exited at once with code {code}",
                hint=f"Last lines of {log}:\n{_tail(log)}",
            )
        return ObservedInstance(
            instance_id=spec.instance_id,
            service=spec.service,
            serial=spec.serial,
            release=spec.release,
            state=ObservedState.RUNNING,
            address=f"127.0.0.1:{port}",
            driver_ref=f"pid:{bwrap.pid}:{bwrap.start_time}",
            image_digest=spec.image_digest,
            started_at=bwrap.start_time,
        )

    async def _exit_within(self, inst: _Instance, seconds: float) -> int | None:
        """The exit code if the instance ends within `seconds`, else None (still running)."""
        deadline = time.monotonic() + seconds
        while True:
            if not self._is_running(inst):
                code = _recorded_exit(inst.dir)
                return 1 if code is None else code
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(_POLL)

    # -- watching and stopping ----------------------------------------------------------------

    def _is_running(self, inst: _Instance) -> bool:
        """Whether anything of the instance still runs; reaps bwrap if it is our child."""
        if inst.bwrap is not None:
            code = inst.bwrap.reap()
            if code is not None:
                _record_exit(inst.dir, code)
        return any(p.is_alive() for p in inst.procs())

    def _kill(self, inst: _Instance) -> None:
        if inst.sandbox is not None:
            inst.sandbox.signal(signal.SIGKILL, group=True)  # ends the whole pid namespace
        if inst.bwrap is not None:
            inst.bwrap.signal(signal.SIGKILL, group=True)

    async def _wait_ended(self, inst: _Instance) -> None:
        deadline = time.monotonic() + _KILL_WAIT
        while self._is_running(inst):
            if time.monotonic() >= deadline:
                raise DriverError(
                    f"{inst.id} still runs {_KILL_WAIT:.0f} s after SIGKILL "
                    f"(pids {[p.pid for p in inst.procs()]})",
                    hint="Look for a process stuck in the kernel (state D) and stop it by hand.",
                )
            await asyncio.sleep(_POLL)

    def _observed(self, inst: _Instance) -> ObservedInstance:
        launch = inst.launch
        running = inst.bwrap is not None and self._is_running(inst)
        bwrap = inst.bwrap
        return ObservedInstance(
            instance_id=inst.id,
            service=str(launch["service"]),
            serial=int(launch["serial"]),
            release=int(launch["release"]),
            state=ObservedState.RUNNING if running else ObservedState.EXITED,
            address=f"127.0.0.1:{launch['port']}" if running else None,
            driver_ref=f"pid:{bwrap.pid}:{bwrap.start_time}" if bwrap else "",
            image_digest=str(launch["image_digest"]),
            exit_code=None if running else _recorded_exit(inst.dir),
            started_at=bwrap.start_time if bwrap else float(launch["created_at"]),
        )

    # -- the bookkeeping on disk --------------------------------------------------------------

    def _instance_dir(self, instance_id: str) -> Path:
        return self._instances_root() / instance_id

    def _instances_root(self) -> Path:
        return self._home.instances(self.environment) / self.project

    def _volume_dir(self, mount: Mount) -> Path:
        """The volume's directory, created on first use and never removed by the driver."""
        path = local_dir(self._home, self.environment, self.project, mount)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def _logs_root(self) -> Path:
        return self._home.logs(self.environment) / self.project

    def _log_file(self, service: str, instance_id: str) -> Path:
        return self._logs_root() / service / f"{instance_id}.log"

    def _instances(self) -> Iterator[_Instance]:
        root = self._instances_root()
        if not root.is_dir():
            return
        for entry in sorted(root.iterdir()):
            if not entry.name.startswith("."):
                inst = self._load(entry.name)
                if inst is not None:
                    yield inst

    def _load(self, instance_id: str) -> _Instance | None:
        """The instance dir of this project with this id, or None."""
        if not _ID_PATTERN.match(instance_id):
            return None
        inst_dir = self._instance_dir(instance_id)
        try:
            launch = json.loads((inst_dir / "launch.json").read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DriverError(
                f"{inst_dir / 'launch.json'} cannot be read: {exc}",
                hint="Stop its processes by hand if any run, then remove that directory.",
            ) from exc
        if launch.get("project") != self.project:
            return None  # not ours (cannot happen unless files were moved by hand)
        try:
            pids = json.loads((inst_dir / "pid").read_text())
            bwrap = _Proc(int(pids["pid"]), float(pids["start_time"]))
            sandbox = _Proc(**pids["sandbox"]) if pids.get("sandbox") else None
        except FileNotFoundError:
            return _Instance(inst_dir, launch, None, None)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DriverError(
                f"{inst_dir / 'pid'} cannot be read: {exc!r}",
                hint="Remove that file: the instance is then reported exited, and forgetting "
                "it kills its processes.",
            ) from exc
        return _Instance(inst_dir, launch, bwrap, sandbox)

    def _ports_taken(self) -> set[int]:
        """Ports handed to instances that may not listen yet (so bind(0) cannot tell)."""
        return {int(inst.launch["port"]) for inst in self._instances()}


def _environ(pid: int) -> dict[str, str]:
    """The environment the instance was started with (its sandbox init's)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _secret_values(pid: int, launch: dict[str, Any], env: dict[str, str]) -> list[str]:
    """Values of the instance's secrets (env or /run/secrets files), to redact (law 5)."""
    values = []
    for name in launch.get("secret_names", []):
        if name in env:
            values.append(env[name])
        with contextlib.suppress(OSError):
            values.append(Path(f"/proc/{pid}/root/run/secrets/{name}").read_text(errors="replace"))
    return values


def _launch_record(spec: LaunchSpec, *, command: list[str], port: int) -> dict[str, Any]:
    """The LaunchSpec as written ahead of spawning. Env *values* stay out: they may hold
    secrets, which never rest in clear on disk (law 5); the names are enough to debug."""
    return {
        **launch_fields(spec),
        "command": command,
        "env_names": sorted(spec.env),
        "secret_names": sorted(spec.secrets),  # names only: values never touch disk
        "requested_port": spec.port,
        "port": port,
        "created_at": time.time(),
    }


def _instance_env(spec: LaunchSpec, image: ImageRuntime, port: int) -> dict[str, str]:
    """The instance's whole environment: corral's own variables are set last, so neither the
    image nor the service can override them."""
    return {
        "PATH": DEFAULT_PATH,
        "HOME": "/scratch",
        **image.env,
        **spec.env,
        "PORT": str(port),
        "SCRATCH": "/scratch",
        "CORRAL_INSTANCE": spec.instance_id,
        "CORRAL_SERVICE": spec.service,
        "CORRAL_RELEASE": f"r{spec.release}",
        "CORRAL_SERIAL": str(spec.serial),
    }


def _secret_env(spec: LaunchSpec) -> dict[str, str]:
    """`as: env` secrets; they never override corral's own variables."""
    return {
        name: value
        for name, (value, as_) in spec.secrets.items()
        if as_ == "env" and name != "PORT" and not name.startswith("CORRAL_")
    }


def _with_secret_files(options: list[str], spec: LaunchSpec) -> tuple[list[int], list[str]]:
    """`as: file` secrets: each value in a memfd (memory, never a file on disk) that bwrap
    copies into /run/secrets/NAME, mode 0400, on a tmpfs of its own made read-only after.
    Inserted before the root is remounted read-only. The caller closes the fds after spawning."""
    files = {n: v for n, (v, as_) in spec.secrets.items() if as_ == "file"}
    if not files:
        return [], options
    fds: list[int] = []
    args = ["--tmpfs", "/run/secrets"]
    try:
        for name, value in sorted(files.items()):
            fd = os.memfd_create(f"corral-secret-{name}")
            fds.append(fd)
            os.write(fd, value.encode())
            os.lseek(fd, 0, os.SEEK_SET)
            os.set_inheritable(fd, True)  # bwrap reads it; closed here once spawned
            args += ["--perms", "0400", "--file", str(fd), f"/run/secrets/{name}"]
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    args += ["--remount-ro", "/run/secrets"]
    at = options.index("--remount-ro")
    return fds, [*options[:at], *args, *options[at:]]


def _spawn_collector(log: Path, policy: LogPolicy, spec: LaunchSpec) -> tuple[list[int], int]:
    """Start the instance's log collector (corral.logs.collector) in a session of its own,
    reading two new pipes; returns the pipes' write ends (the app's stdout and stderr: the
    caller closes them once the app holds them) and the collector's pid."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        argv = [sys.executable, "-I", "-m", "corral.logs.collector", str(log)]
        argv += [str(policy.max_size), repr(policy.max_age)]
        if policy.forward:  # to a central syslog server, tagged with the instance's labels
            argv += [policy.forward, spec.service, spec.instance_id, f"release=r{spec.release}"]
            argv += [f"project={spec.project}", f"environment={spec.environment}"]
        pid = os.posix_spawn(
            sys.executable,
            argv,
            {"PATH": DEFAULT_PATH},
            setsid=True,
            setsigdef=_CATCHABLE_SIGNALS,
            setsigmask=(),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                # Not our stdout/stderr: a collector holding them would keep whoever reads
                # the agent's output waiting for end-of-file as long as the instance runs.
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, 1, 2),
                (os.POSIX_SPAWN_DUP2, out_r, 3),
                (os.POSIX_SPAWN_DUP2, err_r, 4),
            ],
        )
    except OSError as exc:
        for fd in (out_w, err_w):
            os.close(fd)
        raise DriverError(f"could not start the log collector: {exc}") from exc
    finally:
        for fd in (out_r, err_r):
            os.close(fd)
    return [out_w, err_w], pid


async def _wait_collected(pid: int, seconds: float = 2.0) -> None:
    """Wait (bounded) for a collector whose app has ended to have written everything."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        await asyncio.sleep(_POLL)


def _posix_spawn(
    bwrap: str,
    options: list[str],
    command: list[str],
    env: dict[str, str],
    outputs: list[int],
    *,
    status: Path,
) -> _Proc:
    """Start bwrap in a session of its own, detached from us: stdin /dev/null, stdout and
    stderr the pipes of the instance's log collector (which outlives the agent, so lines keep
    being collected when the agent is gone), signals as a fresh process has them.

    posix_spawn, not subprocess.Popen: a Popen dropped while its child runs warns, and these
    children are meant to outlive every object (and process) that started them. The env goes
    through execve, not `--setenv`, to keep its values (maybe secrets) out of `ps`; bwrap hands
    exactly this env to the app."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    status_fd = os.open(status, flags, 0o600)
    try:
        os.set_inheritable(status_fd, True)  # bwrap writes its status there, agent or not
        argv = [bwrap, *options, "--json-status-fd", str(status_fd), "--", *command]
        pid = os.posix_spawn(
            bwrap,
            argv,
            env,
            setsid=True,
            # Not Python's: it ignores SIGPIPE, and an ignored signal survives exec.
            setsigdef=_CATCHABLE_SIGNALS,
            setsigmask=(),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, outputs[0], 1),
                (os.POSIX_SPAWN_DUP2, outputs[1], 2),
            ],
        )
    except OSError as exc:
        raise DriverError(f"could not run {bwrap}: {exc}") from exc
    finally:
        os.close(status_fd)
    proc = _Proc.of(pid)
    if proc is None:  # cannot happen: an unreaped child stays visible
        raise DriverError(f"bwrap (pid {pid}) vanished right after it was started")
    return proc


async def _wait_sandbox(bwrap: _Proc, status: Path) -> _Proc | None:
    """The sandbox init, once bwrap has created it (bwrap writes its pid to the status file).
    None when it has already ended, or bwrap failed before creating it."""
    deadline = time.monotonic() + _START_WAIT
    while True:
        for doc in _status_docs(status):
            if "child-pid" in doc:
                return _Proc.of(int(doc["child-pid"]))
        if not bwrap.is_alive():
            return None
        if time.monotonic() >= deadline:
            raise DriverError(f"bwrap (pid {bwrap.pid}) did not create a sandbox within 5 s")
        await asyncio.sleep(0.005)


def _status_docs(status: Path) -> list[dict[str, Any]]:
    """bwrap's status file: one JSON document per line; a half-written last line is skipped."""
    try:
        text = status.read_text()
    except FileNotFoundError:
        return []
    docs = []
    for line in text.splitlines():
        try:
            docs.append(json.loads(line))
        except ValueError:
            continue
    return docs


def _recorded_exit(inst_dir: Path) -> int | None:
    for doc in _status_docs(inst_dir / "status"):
        if "exit-code" in doc:
            return int(doc["exit-code"])
    return None


def _record_exit(inst_dir: Path, code: int) -> None:
    """Keep the exit code we reaped when bwrap could not write one (it was killed itself)."""
    if _recorded_exit(inst_dir) is None:
        with open(inst_dir / "status", "a") as f:
            f.write(json.dumps({"exit-code": code, "reaped-by": "corral"}) + "\n")


async def _kill_strays(inst_dir: Path) -> None:
    """Kill the sandbox of an instance whose pid file was never written (the driver died right
    after spawning): it is found by its scratch dir on bwrap's command line."""
    marker = str(inst_dir / "scratch")
    strays: list[_Proc] = []
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        cmdline = proc.info["cmdline"] or []
        if marker in cmdline and "--bind" in cmdline:
            strays.append(_Proc(proc.pid, proc.info["create_time"]))
    for stray in strays:
        stray.signal(signal.SIGKILL, group=False)
    deadline = time.monotonic() + _KILL_WAIT
    while time.monotonic() < deadline:
        for stray in strays:
            stray.reap()
        if not any(stray.is_alive() for stray in strays):
            return
        await asyncio.sleep(_POLL)


def _free_port(taken: set[int]) -> int:
    """A port on 127.0.0.1 that nothing listens on now and no other instance was given."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port
    raise DriverError("found no free port on 127.0.0.1 after 50 tries")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
