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
from pathlib import Path
from typing import Any

import psutil

from corral.testing import load

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


class Load(load.Load):
    """The benches' load: 8 keep-alive clients for at most 2 minutes unless told otherwise."""

    def __init__(
        self, url: str, *, clients: int = 8, max_seconds: float = 120.0, **options: Any
    ) -> None:
        super().__init__(url, clients=clients, max_seconds=max_seconds, **options)


class TimedLoad(load.Load):
    """Keep-alive clients on the route `port` recording every request's latency."""

    def __init__(self, port: int, clients: int = 6, max_seconds: float = 120) -> None:
        super().__init__(
            f"http://127.0.0.1:{port}/",
            clients=clients,
            max_seconds=max_seconds,
            json_body=False,
            record=True,
        )
