"""HTTP health checks: is an instance ready to receive traffic?

A probe is one short HTTP/1.1 GET with `Connection: close`; an instance is ready after
`healthy_threshold` consecutive passes. Raw asyncio streams keep a probe cheap (hundreds run
during a large roll-out).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HealthCheck:
    path: str = "/"
    status: int = 200
    interval: float = 0.2
    timeout: float = 2.0
    healthy_threshold: int = 1
    start_timeout: float = 30.0
    tcp: bool = False  # a connection accepted is enough

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HealthCheck:
        health = config.get("health") or {}
        http = health.get("http") or {}
        return cls(
            path=http.get("path", "/"),
            status=int(http.get("status", 200)),
            interval=float(health.get("interval", 0.2)),
            timeout=float(health.get("timeout", 2.0)),
            healthy_threshold=int(health.get("healthy_threshold", 1)),
            start_timeout=float(health.get("start_timeout", 30.0)),
            tcp=bool(health.get("tcp", False)),
        )


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


async def probe(address: str, check: HealthCheck) -> ProbeResult:
    """One GET of the health path; ok when the status matches."""
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


async def wait_ready(
    address: str, check: HealthCheck, *, deadline: float | None = None
) -> ProbeResult:
    """Probe until `healthy_threshold` passes in a row, or fail at the start timeout."""
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
