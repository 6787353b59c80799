"""End-to-end fixtures: a private CORRAL_HOME, a copy of the example, the real CLI.

Every test tears down what it started (destroy, agent stop, then any process still running
from its home is killed by pid), even when it fails.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
CORRAL = str(Path(sys.executable).parent / "corral")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_of(home: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if str(home) in " ".join(process.info["cmdline"] or []):
                found.append(process)
        except psutil.Error:
            continue
    return found


@dataclass
class Fleet:
    """A copy of examples/hello with its own home and route port, driven by the real CLI."""

    home: Path
    dir: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> Path:
        return self.dir / "corral.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def run(
        self, *args: str, timeout: float = 90, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CORRAL, *args, "--file", str(self.spec)],
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [CORRAL, *args, "--file", str(self.spec)],
            env={**self.env, **(extra_env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def ok(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, f"corral {' '.join(args)}: {result.stdout}\n{result.stderr}"
        return result

    def status(self) -> dict[str, Any]:
        return json.loads(self.ok("status", "--json").stdout)  # type: ignore[no-any-return]

    def edit_spec(self, old: str, new: str) -> None:
        text = self.spec.read_text()
        assert old in text, old
        self.spec.write_text(text.replace(old, new))

    def set_version(self, version: str) -> None:
        (self.dir / "app" / "VERSION").write_text(version + "\n")

    def get(self, path: str = "/") -> dict[str, Any]:
        response = httpx.get(
            self.url.rstrip("/") + path, timeout=5.0, headers={"Connection": "close"}
        )
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def instance_pids(self) -> dict[str, int]:
        """instance id → pid of its sandbox, from the driver's files."""
        pids = {}
        for pid_file in (self.home / "instances").rglob("pid"):
            text = pid_file.read_text().strip()
            pid = int(json.loads(text)["pid"]) if text.startswith("{") else int(text.split()[0])
            pids[pid_file.parent.name] = pid
        return pids

    def agent_pid(self) -> int | None:
        result = self.run("agent", "status", "--json")
        data = json.loads(result.stdout)
        return int(data["agent"]["pid"]) if data["running"] else None


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    home = Path(tempfile.mkdtemp(prefix="c-", dir="/tmp"))
    work = home / "work"
    shutil.copytree(ROOT / "examples" / "hello", work)
    port = free_port()
    spec = work / "corral.yaml"
    spec.write_text(spec.read_text().replace("port: 8000", f"port: {port}"))
    env = {
        **os.environ,
        "CORRAL_HOME": str(home),
        "CORRAL_AGENT_TICK": "0.2",
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    env.pop("CORRAL_STATE_URL", None)
    env.pop("CORRAL_FAULT", None)
    the_fleet = Fleet(home=home, dir=work, port=port, env=env)
    try:
        yield the_fleet
    finally:
        the_fleet.run("destroy", timeout=60)
        the_fleet.run("agent", "stop", timeout=30)
        for process in processes_of(home):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                with contextlib.suppress(psutil.Error):
                    process.kill()
        shutil.rmtree(home, ignore_errors=True)


class Load:
    """Bounded HTTP load through the router from a few keep-alive clients, counting failures.

    A failed request: connection error, a 5 s timeout, or a 5xx (made by the router or the
    app). Uses the standard library's keep-alive client: lighter than httpx, so a few threads
    reach a few hundred requests/s on a busy 2-core machine."""

    def __init__(
        self, url: str, *, clients: int = 4, max_seconds: float = 60.0, max_requests: int = 200_000
    ) -> None:
        self.url = url
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.ok = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.releases: Counter[str] = Counter()
        self.started = 0.0
        self.stopped = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
        deadline = time.monotonic() + self.max_seconds
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self.ok + self.failed >= self.max_requests:
                    break
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=5.0)
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                if response.status >= 500:
                    outcome, release = f"HTTP {response.status}", None
                else:
                    outcome, release = None, json.loads(body).get("release")
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                outcome, release = type(exc).__name__, None
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                if outcome is None:
                    self.ok += 1
                    self.releases[str(release)] += 1
                else:
                    self.failed += 1
                    self.errors[outcome] += 1
        if conn is not None:
            conn.close()

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
