"""Harnesses for the driver conformance suite: one per driver, each able to make drivers,
launch specs, a crash, a failing start and an instance started by "another agent".

The local harness builds an image root by hand: /app/server.py, a stdlib HTTP server run by
Debian's /usr/bin/python3 (the venv's python lives outside what the sandbox lends).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Protocol

import httpx
import psutil

from corral.drivers.local import LocalDriver
from corral.drivers.memory import InMemoryDriver, MemoryHost
from corral.drivers.protocol import Driver, ImageRuntime, LaunchSpec, ObservedInstance

PROJECT = "proj"
ENVIRONMENT = "test"
DIGEST = "sha256:" + "ab" * 32
PYTHON = "/usr/bin/python3"

SERVER = textwrap.dedent(
    """
    import errno, http.server, json, os, signal, sys

    instance = os.environ.get("CORRAL_INSTANCE", "?")
    print(f"hello from {instance}", flush=True)
    print(f"stderr of {instance}", file=sys.stderr, flush=True)

    def on_term(signum, frame):
        print(f"{instance}: got SIGTERM", flush=True)
        os._exit(0)

    ignore = "--ignore-term" in sys.argv
    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore else on_term)

    def try_write(path):
        try:
            with open(path, "w") as f:
                f.write(instance)
            return "ok"
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno))

    def probe():
        with open("/proc/self/status") as f:
            caps = [l.split()[1] for l in f if l.startswith("CapEff:")][0]
        writes = {p: try_write(p) for p in ("/app/probe", "/usr/probe", "/probe")}
        writes["/scratch/" + instance] = try_write("/scratch/" + instance)
        writes["/tmp/" + instance] = try_write("/tmp/" + instance)
        return {"writes": writes, "caps": caps, "scratch": sorted(os.listdir("/scratch")),
                "tmp": sorted(os.listdir("/tmp"))}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/healthz":
                body = b"ok"
            elif self.path == "/env":
                body = json.dumps(dict(os.environ)).encode()
            elif self.path == "/probe":
                body = json.dumps(probe()).encode()
            else:
                body = instance.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
    """
)

# Runs in a separate Python process that starts one instance, then kill -9s its own process
# group, as an agent killed mid-flight: the instance must outlive it.
START_ELSEWHERE = textwrap.dedent(
    """
    import asyncio, json, os, signal, sys
    from pathlib import Path
    from corral.drivers.local import LocalDriver
    from corral.drivers.protocol import ImageRuntime, LaunchSpec

    home, rootfs, spec = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    image = ImageRuntime(rootfs=rootfs, cmd=json.loads(sys.argv[4]), workdir="/app",
                         has_os=False)
    driver = LocalDriver(home, spec["project"], spec["environment"], lambda digest: image)
    observed = asyncio.run(driver.start(LaunchSpec(**spec)))
    print(observed.driver_ref, flush=True)
    os.killpg(0, signal.SIGKILL)  # the agent's whole process group dies with kill -9
    """
)


def build_rootfs(root: Path) -> Path:
    """An image with no OS of its own: just /app/server.py."""
    (root / "app").mkdir(parents=True)
    (root / "app" / "server.py").write_text(SERVER)
    return root


class Harness(Protocol):
    kind: str

    def driver(
        self, environment: str = ENVIRONMENT, project: str = PROJECT, **kwargs: Any
    ) -> Driver:
        """A driver of this kind; kwargs are options only that kind knows (ignored by others)."""
        ...

    def spec(self, instance_id: str, **overrides: Any) -> LaunchSpec: ...

    async def crash(self, driver: Driver, observed: ObservedInstance) -> None: ...

    def failing_spec(self, driver: Driver, instance_id: str) -> LaunchSpec: ...

    async def start_elsewhere(self, spec: LaunchSpec) -> None:
        """Start `spec` from another driver object (for local: another process) that is gone
        right after, as an agent killed and replaced would be."""
        ...

    async def cleanup(self) -> None: ...


def _spec(instance_id: str, **overrides: Any) -> LaunchSpec:
    fields: dict[str, Any] = {
        "instance_id": instance_id,
        "project": PROJECT,
        "environment": ENVIRONMENT,
        "service": "web",
        "serial": 1,
        "release": 1,
        "image_digest": DIGEST,
        "command": None,
    }
    fields.update(overrides)
    return LaunchSpec(**fields)


class MemoryHarness:
    kind = "memory"

    def __init__(self) -> None:
        self.host = MemoryHost()

    def driver(
        self, environment: str = ENVIRONMENT, project: str = PROJECT, **kwargs: Any
    ) -> InMemoryDriver:
        return InMemoryDriver(project, environment, host=self.host)

    def spec(self, instance_id: str, **overrides: Any) -> LaunchSpec:
        return _spec(instance_id, **overrides)

    async def crash(self, driver: Driver, observed: ObservedInstance) -> None:
        assert isinstance(driver, InMemoryDriver)
        driver.crash(observed.instance_id)

    def failing_spec(self, driver: Driver, instance_id: str) -> LaunchSpec:
        assert isinstance(driver, InMemoryDriver)
        driver.fail_next_start("the command exited at once")
        return self.spec(instance_id)

    async def start_elsewhere(self, spec: LaunchSpec) -> None:
        await InMemoryDriver(spec.project, spec.environment, host=self.host).start(spec)

    async def cleanup(self) -> None:
        pass


class LocalHarness:
    kind = "local"

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.rootfs = build_rootfs(tmp_path / "rootfs")
        self.cmd = [PYTHON, "/app/server.py"]
        self.image = ImageRuntime(
            rootfs=self.rootfs,
            cmd=self.cmd,
            env={"FROM_IMAGE": "image", "SHARED": "image"},
            workdir="/app",
            has_os=False,
        )
        self.drivers: list[LocalDriver] = []

    def driver(
        self, environment: str = ENVIRONMENT, project: str = PROJECT, **kwargs: Any
    ) -> LocalDriver:
        driver = LocalDriver(self.home, project, environment, self._resolve, **kwargs)
        self.drivers.append(driver)
        return driver

    def instance_dir(self, instance_id: str) -> Path:
        """Where the local driver keeps an instance's files (white-box: for crash tests)."""
        return self.home / "instances" / ENVIRONMENT / PROJECT / instance_id

    def _resolve(self, digest: str) -> ImageRuntime:
        assert digest == DIGEST
        return self.image

    def spec(self, instance_id: str, **overrides: Any) -> LaunchSpec:
        return _spec(instance_id, **overrides)

    async def crash(self, driver: Driver, observed: ObservedInstance) -> None:
        """kill -9 of the sandbox's process group: the app and the namespace's init."""
        init = psutil.Process(bwrap_pid(observed)).children()[0]
        os.killpg(init.pid, signal.SIGKILL)

    def failing_spec(self, driver: Driver, instance_id: str) -> LaunchSpec:
        return self.spec(instance_id, command=["/bin/sh", "-c", "echo boom >&2; exit 3"])

    async def start_elsewhere(self, spec: LaunchSpec) -> None:
        fields = {k: getattr(spec, k) for k in spec.__dataclass_fields__}
        helper = subprocess.run(
            [
                sys.executable,
                "-c",
                START_ELSEWHERE,
                str(self.home),
                str(self.rootfs),
                json.dumps(fields),
                json.dumps(self.cmd),
            ],
            timeout=30,
            capture_output=True,
            start_new_session=True,  # its kill -9 of its group must not reach pytest
        )
        assert helper.returncode == -signal.SIGKILL, helper.stderr.decode()
        assert helper.stdout.startswith(b"pid:"), helper.stderr.decode()

    async def cleanup(self) -> None:
        """Stop and forget everything the drivers of this test see, then kill anything still
        running from this home (a test that failed half-way)."""
        try:
            for driver in self.drivers:
                for observed in await driver.observe():
                    await driver.stop(observed.instance_id, grace=0)
                    await driver.forget(observed.instance_id)
        finally:
            kill_everything_under(self.home)


def bwrap_pid(observed: ObservedInstance) -> int:
    kind, pid, _ = observed.driver_ref.split(":")
    assert kind == "pid"
    return int(pid)


def processes_under(home: Path) -> list[psutil.Process]:
    """Every live process whose command line names a path under `home` (bwrap's mounts do)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(str(home) in a for a in cmdline):
            found.append(proc)
    return found


def kill_everything_under(home: Path) -> None:
    for proc in processes_under(home):
        with contextlib.suppress(psutil.Error):
            proc.kill()
    for proc in processes_under(home):
        with contextlib.suppress(psutil.Error):
            proc.wait(timeout=5)


async def http_get(address: str, path: str = "/", *, timeout: float = 10.0) -> str:
    """GET http://address/path, retried until it answers (bounded): readiness is not the
    driver's promise, only that the process runs."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
        while True:
            try:
                response = await client.get(f"http://{address}{path}")
                return response.text
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
