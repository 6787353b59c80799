"""Health checks: is an instance started, ready for traffic, alive?

A release has one readiness check (`health:`: http, tcp or exec) and optionally a `startup`
and a `liveness` check of its own, as in Kubernetes, but probed by corral itself so they mean
the same on every driver. An http probe is one short HTTP/1.1 GET with `Connection: close`
(raw asyncio streams keep it cheap: hundreds run during a large roll-out); a tcp probe is one
accepted connection; an exec probe is a command the driver runs inside the instance
(`drivers.protocol.Execs`), passing on exit code 0.

Waiting for a start (`wait_ready`) is: startup until it passes once (failing after
`failure_threshold` failures in a row), then readiness until `healthy_threshold` passes in a
row within `start_timeout`. Judging a started instance is `Streak` plus `judge_*`: pure, so the
agent's watch (agent/health_watch.py) only probes and acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from corral.drivers.protocol import ExecResult, Execs
from corral.errors import DriverError

ExecIn = Callable[[list[str], float], Awaitable[ExecResult]]  # (argv, timeout) in one instance


@dataclass(frozen=True)
class HealthCheck:
    """One check, as a release's config gives it. The readiness check carries the optional
    `startup` and `liveness` checks (whose healthy_threshold is 1, as Kubernetes requires)."""

    path: str = "/"
    status: int = 200
    interval: float = 0.2
    timeout: float = 2.0
    healthy_threshold: int = 1
    start_timeout: float = 30.0
    tcp: bool = False  # a connection accepted is enough
    argv: tuple[str, ...] | None = None  # an exec check: this command, inside the instance
    failure_threshold: int = 3
    startup: HealthCheck | None = None
    liveness: HealthCheck | None = None
    # how to run `argv` in the instance being probed (bound per instance: `bind_exec`)
    exec_in: ExecIn | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HealthCheck:
        health = config.get("health") or {}
        return replace(
            cls._one(health, interval=0.2, timeout=2.0),
            healthy_threshold=int(health.get("healthy_threshold", 1)),
            start_timeout=float(health.get("start_timeout", 30.0)),
            startup=cls._one(health["startup"]) if health.get("startup") else None,
            liveness=cls._one(health["liveness"]) if health.get("liveness") else None,
        )

    @classmethod
    def _one(
        cls, raw: dict[str, Any], *, interval: float = 1.0, timeout: float = 1.0
    ) -> HealthCheck:
        http = raw.get("http") or {}
        argv = raw.get("exec")
        return cls(
            path=http.get("path", "/"),
            status=int(http.get("status", 200)),
            interval=float(raw.get("interval", interval)),
            timeout=float(raw.get("timeout", timeout)),
            tcp=bool(raw.get("tcp", False)),
            argv=tuple(argv) if argv else None,
            failure_threshold=int(raw.get("failure_threshold", 3)),
        )

    @property
    def uses_exec(self) -> bool:
        return any(c is not None and c.argv for c in (self, self.startup, self.liveness))

    def describe(self) -> str:
        """What is probed, for events: "exec `test -f /tmp/ok`", "http /healthz", "tcp"."""
        if self.argv:
            return f"exec `{shlex.join(self.argv)}`"
        return "tcp" if self.tcp else f"http {self.path}"

    def bound(self, exec_in: ExecIn) -> HealthCheck:
        """This check (and its startup and liveness) running exec probes through `exec_in`."""
        return replace(
            self,
            exec_in=exec_in,
            startup=self.startup and replace(self.startup, exec_in=exec_in),
            liveness=self.liveness and replace(self.liveness, exec_in=exec_in),
        )


def bind_exec(check: HealthCheck, driver: object, instance_id: str) -> HealthCheck:
    """`check` with its exec probes run inside `instance_id` by `driver`, if it can exec."""
    if not check.uses_exec or not isinstance(driver, Execs):
        return check

    def exec_in(argv: list[str], timeout: float) -> Awaitable[ExecResult]:
        return driver.exec(instance_id, argv, timeout)

    return check.bound(exec_in)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


async def probe(address: str, check: HealthCheck) -> ProbeResult:
    """One probe of `check`: an http GET (ok when the status matches), a tcp connect, or an
    exec (ok on exit code 0)."""
    if check.argv:
        return await _probe_exec(check)
    host, _, port = address.rpartition(":")
    if check.tcp:
        return await _probe_tcp(host, int(port), check.timeout)
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(
                    f"GET {check.path} HTTP/1.1\r\nHost: {address}\r\n"
                    "User-Agent: corral-health\r\nConnection: close\r\n\r\n".encode()
                )
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        return ProbeResult(False, f"no answer within {check.timeout:g}s")
    except OSError as exc:
        return ProbeResult(False, exc.strerror or type(exc).__name__)
    parts = status_line.decode("latin-1").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return ProbeResult(False, "not an HTTP response")
    status = int(parts[1])
    if status != check.status:
        return ProbeResult(False, f"{check.path} answered {status}, expected {check.status}")
    return ProbeResult(True, f"{check.path} answered {status}")


async def _probe_tcp(host: str, port: int, timeout: float) -> ProbeResult:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return ProbeResult(False, f"port {port}: no connection within {timeout:g}s")
    except OSError as exc:
        return ProbeResult(False, f"port {port}: {exc.strerror or type(exc).__name__}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True, f"port {port} accepts connections")


async def _probe_exec(check: HealthCheck) -> ProbeResult:
    command = f"`{shlex.join(check.argv or ())}`"
    if check.exec_in is None:
        return ProbeResult(False, f"{command}: this driver cannot run commands in instances")
    try:
        done = await check.exec_in(list(check.argv or ()), check.timeout)
    except DriverError as exc:
        return ProbeResult(False, f"{command}: {exc}")
    if done.timed_out:
        return ProbeResult(False, f"{command} did not end within {check.timeout:g}s")
    first = next((line.strip() for line in done.output.splitlines() if line.strip()), "")
    said = f": {first[:200]}" if first else ""
    if done.exit_code != 0:
        return ProbeResult(False, f"{command} exited {done.exit_code}{said}")
    return ProbeResult(True, f"{command} exited 0")


async def wait_ready(
    address: str, check: HealthCheck, *, deadline: float | None = None
) -> ProbeResult:
    """Startup (if any) until it passes, then readiness until `healthy_threshold` passes in a
    row; a failed start when startup fails `failure_threshold` times in a row, or readiness
    does not pass within `start_timeout` (counted from when startup passed)."""
    if check.startup is not None:
        started = await _wait_started(address, check.startup)
        if not started.ok:
            return started
    end = deadline if deadline is not None else time.monotonic() + check.start_timeout
    passes = 0
    last = ProbeResult(False, "not probed yet")
    while True:
        last = await probe(address, check)
        passes = passes + 1 if last.ok else 0
        if passes >= check.healthy_threshold:
            return last
        if time.monotonic() + check.interval > end:
            return ProbeResult(False, f"not healthy within {check.start_timeout:g}s: {last.detail}")
        await asyncio.sleep(check.interval)


async def _wait_started(address: str, startup: HealthCheck) -> ProbeResult:
    streak = Streak()
    while True:
        last = await probe(address, startup)
        streak.record(last.ok)
        if last.ok:
            return last
        if streak.failures >= startup.failure_threshold:
            return ProbeResult(
                False,
                f"startup check ({startup.describe()}) failed {streak.failures} times in a "
                f"row: {last.detail}",
            )
        await asyncio.sleep(startup.interval)


# -- judging started instances (pure) ---------------------------------------------------------


@dataclass
class Streak:
    """Consecutive passes and failures of one check on one instance."""

    passes: int = 0
    failures: int = 0

    def record(self, ok: bool) -> None:
        if ok:
            self.passes, self.failures = self.passes + 1, 0
        else:
            self.passes, self.failures = 0, self.failures + 1


class Verdict(enum.Enum):
    KEEP = "keep"  # nothing changes
    READY = "ready"  # back into routing
    UNREADY = "unready"  # out of routing, not replaced
    DEAD = "dead"  # replaced (law 8)


def judge_readiness(check: HealthCheck, streak: Streak, *, routed: bool) -> Verdict:
    """With a liveness check, readiness only routes: failure_threshold failures in a row take
    the instance out, healthy_threshold passes bring it back. Without one, readiness failing
    failure_threshold times in a row makes it dead, as it always did."""
    if streak.failures >= check.failure_threshold:
        if check.liveness is None:
            return Verdict.DEAD
        return Verdict.UNREADY if routed else Verdict.KEEP
    if not routed and streak.passes >= check.healthy_threshold:
        return Verdict.READY
    return Verdict.KEEP


def judge_liveness(liveness: HealthCheck, streak: Streak) -> Verdict:
    return Verdict.DEAD if streak.failures >= liveness.failure_threshold else Verdict.KEEP
