"""Shared by the benches: a private copy of the example fleet driven by the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
CORRAL = str(Path(sys.executable).parent / "corral")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BenchFleet:
    def __init__(self, replicas: int, *, max_surge: int | str = 1) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="cb-", dir="/tmp"))
        self.dir = self.home / "work"
        shutil.copytree(ROOT / "examples" / "hello", self.dir)
        self.port = free_port()
        spec = self.spec.read_text()
        spec = spec.replace("port: 8000", f"port: {self.port}")
        spec = spec.replace("replicas: 3", f"replicas: {replicas}")
        spec = spec.replace("max_surge: 1", f"max_surge: {max_surge}")
        self.spec.write_text(spec)
        self.env = {**os.environ, "CORRAL_HOME": str(self.home), "NO_COLOR": "1"}

    @property
    def spec(self) -> Path:
        return self.dir / "corral.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def corral(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [CORRAL, *args, "--file", str(self.spec)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise SystemExit(f"corral {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.corral(*args, "--json").stdout)

    def agent_pid(self) -> int:
        return int(self.json("agent", "status")["agent"]["pid"])

    def last_rollout(self) -> dict[str, Any]:
        events = self.json("events", "--limit", "1000")["events"]
        done = [e for e in events if e["kind"] == "rollout.succeeded"]
        return dict(done[-1]["data"])

    def close(self) -> None:
        subprocess.run(
            [CORRAL, "destroy", "-f", str(self.spec)],
            env=self.env,
            capture_output=True,
            timeout=300,
        )
        subprocess.run(
            [CORRAL, "agent", "stop", "-f", str(self.spec)],
            env=self.env,
            capture_output=True,
            timeout=60,
        )
        for process in psutil.process_iter(["cmdline"]):
            try:
                if str(self.home) in " ".join(process.info["cmdline"] or []):
                    os.kill(process.pid, signal.SIGKILL)
            except (psutil.Error, OSError):
                pass
        shutil.rmtree(self.home, ignore_errors=True)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Load:
    """Bounded keep-alive load through the router, counting failed requests."""

    def __init__(self, url: str, *, clients: int = 8, max_seconds: float = 120.0) -> None:
        self.url = url
        self.max_seconds = max_seconds
        self.ok = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.started = 0.0
        self.stopped = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    good = client.get(self.url).status_code < 500
                    error = None if good else "5xx"
                except httpx.HTTPError as exc:
                    good, error = False, type(exc).__name__
                with self._lock:
                    if good:
                        self.ok += 1
                    else:
                        self.failed += 1
                        self.errors[error or "?"] += 1

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.stopped = time.monotonic()

    @property
    def rate(self) -> float:
        return (self.ok + self.failed) / max(1e-9, self.stopped - self.started)
