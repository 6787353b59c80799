"""The CLI's side of the agent API: httpx over the agent's unix socket; starts the agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from corral.errors import (
    AgentError,
    CorralError,
    LockedError,
    OperationFailed,
    PortInUseError,
    StalePlanError,
    UsageError,
)
from corral.paths import Home

_ERRORS: dict[str, type[CorralError]] = {
    "StalePlanError": StalePlanError,
    "PortInUseError": PortInUseError,
}


class AgentClient:
    def __init__(
        self,
        home: Home,
        project: str,
        environment: str,
        driver: str = "local",
        driver_settings: dict[str, Any] | None = None,
    ) -> None:
        self.home = home
        self.project = project
        self.environment = environment
        self.driver = driver  # what an agent started by this client runs instances with
        self.driver_settings = driver_settings or {}  # e.g. the swarm's manager and nodes
        self.socket = home.agent_socket(project, environment)
        self._client: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                transport=httpx.HTTPTransport(uds=str(self.socket)),
                base_url="http://agent",
                timeout=httpx.Timeout(60.0, connect=2.0),
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def is_running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            self.http.get("/v1/agent", timeout=2.0).raise_for_status()
        except (httpx.HTTPError, OSError):
            return False
        return True

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except (httpx.HTTPError, OSError) as exc:
            raise AgentError(
                f"the agent at {self.socket} did not answer: {exc}",
                hint="Check `corral agent status`; its log is "
                f"{self.home.agent_log(self.project, self.environment)}.",
            ) from exc
        if response.status_code >= 400:
            raise error_from(response)
        return response.json()

    def start(self, state_url: str | None, *, timeout: float = 20.0) -> int:
        """Start the agent detached (own session: it outlives this CLI) and wait for it."""
        log_path = self.home.agent_log(self.project, self.environment)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "corral.agent",
            "--home", str(self.home.root),
            "--project", self.project,
            "--env", self.environment,
            "--driver", self.driver,
        ]  # fmt: skip
        if state_url:
            command += ["--state-url", state_url]
        if self.driver_settings:
            command += ["--driver-settings", json.dumps(self.driver_settings, sort_keys=True)]
        with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
            process = subprocess.Popen(
                command,
                stdin=devnull,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise _agent_failed(process.returncode, log_path)
            if self.is_running():
                return process.pid
            time.sleep(0.05)
        raise AgentError(f"the agent did not answer within {timeout:g}s", hint=f"See {log_path}.")

    def ensure(self, state_url: str | None) -> None:
        if not self.is_running():
            self.start(state_url)


def _agent_failed(code: int, log_path: Path) -> CorralError:
    lines = [
        line for line in log_path.read_text(errors="replace").splitlines() if " ERROR " in line
    ]
    reason = lines[-1].split(": ", 1)[-1] if lines else f"see {log_path}"
    message = f"the agent exited at start (code {code}): {reason}"
    if code == 3:
        return LockedError(message, hint="Use that agent (same CORRAL_HOME), or stop it first.")
    if code == 2:
        return UsageError(message)
    return AgentError(message, hint=f"See {log_path}.")


def error_from(response: httpx.Response) -> CorralError:
    """The error an agent answered (its JSON error shape), as the class it names."""
    try:
        body = response.json()
    except ValueError:
        return AgentError(f"the agent answered {response.status_code}: {response.text[:200]}")
    if not isinstance(body, dict) or "exit_code" not in body:
        detail = body.get("detail") if isinstance(body, dict) else body
        return AgentError(f"the agent answered {response.status_code}: {detail}")
    message = str(body.get("message", ""))
    hint = body.get("hint")
    code = int(body["exit_code"])
    if code == 3:
        return LockedError(message, holder=body.get("holder") or {})
    cls = _ERRORS.get(str(body.get("error")))
    if cls is not None:
        return cls(message, hint=hint)
    if code == 2:
        return UsageError(message, hint=hint)
    return OperationFailed(message, hint=hint)
