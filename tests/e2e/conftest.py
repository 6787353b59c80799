"""End-to-end fixtures: a private CORRAL_HOME, a copy of the example, the real CLI.

Every test tears down what it started (destroy, agent stop, then any process still running
from its home is killed by pid), even when it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from corral.testing.load import Load as Load  # the tests import it from here

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
        if not only_in_home(the_fleet):  # what lives elsewhere is removed through corral
            the_fleet.run("destroy", timeout=60)
            the_fleet.run("agent", "stop", timeout=30)
        kill_everything_of(home)
        shutil.rmtree(home, ignore_errors=True)


def only_in_home(fleet: Fleet) -> bool:
    """Whether all the fleet made is in its home: the local driver and the home's SQLite state.
    Then killing its processes and removing the home is a whole teardown, two CLI calls and
    the graceful stops of `destroy` cheaper."""
    spec = fleet.spec.read_text() if fleet.spec.exists() else ""
    driver = re.search(r"^driver:\s*(\S+)", spec, re.MULTILINE)
    return "CORRAL_STATE_URL" not in fleet.env and (driver is None or driver[1] == "local")


def kill_everything_of(home: Path, timeout: float = 15.0) -> None:
    """SIGKILL every process started from `home`: its agents first (so they start nothing
    more), then each sandbox's process group (the sandbox init ends its pid namespace)."""
    deadline = time.monotonic() + timeout
    while (found := processes_of(home)) and time.monotonic() < deadline:
        found.sort(key=lambda process: "corral.agent" not in " ".join(process.info["cmdline"]))
        for process in found:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                with contextlib.suppress(psutil.Error):
                    process.kill()
        time.sleep(0.05)
