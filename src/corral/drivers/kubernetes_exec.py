"""A command inside a pod's app container (exec checks), through the API's exec endpoint.

The API runs it over a websocket (`v4.channel.k8s.io`: each binary message starts with its
channel, 1 stdout, 2 stderr, 3 the final Status), which lightkube does not speak, so the
upgrade is made with httpx-ws over lightkube's own HTTP client (its server, TLS and
credentials). The exit code comes from that Status: Success is 0, `NonZeroExitCode` carries
the code, any other failure means the command could not be run (127).

At the timeout corral closes the stream and reports 124; on a real cluster the kubelet may
let the command run on (it is the container runtime's to end), so checks should be quick.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import json
from typing import Any
from urllib.parse import quote, urlencode

from corral.drivers.kubernetes_api import Cluster
from corral.drivers.protocol import EXEC_READ_LIMIT
from corral.errors import DriverError, PrerequisiteError

PROTOCOL = "v4.channel.k8s.io"
TIMED_OUT = 124  # as `timeout(1)` reports a command it killed
NOT_RUN = 127  # as a shell reports a command it could not run
_STDOUT, _STDERR, _STATUS = 1, 2, 3


def exit_code(status: dict[str, Any] | None) -> int:
    """The exit code a v4 Status stands for."""
    if status is None:
        return NOT_RUN
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            with contextlib.suppress(TypeError, ValueError):
                return int(cause.get("message"))
    return NOT_RUN


async def exec_in_pod(
    http: Any, namespace: str, pod: str, argv: list[str], timeout: float
) -> tuple[bytes, int, bool]:
    """Run `argv` in `pod`'s app container: (the start of its output, exit code, timed out)."""
    try:
        httpx_ws = importlib.import_module("httpx_ws")
    except ImportError as exc:  # the extra installs it beside lightkube
        raise PrerequisiteError(
            "exec on kubernetes needs httpx-ws: pip install 'corral[kubernetes]'"
        ) from exc
    query = urlencode(
        [("container", "app"), ("stdout", "true"), ("stderr", "true")]
        + [("command", arg) for arg in argv]
    )
    url = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}/exec?{query}"
    output = bytearray()
    status: dict[str, Any] | None = None

    async def run() -> None:
        nonlocal status
        async with httpx_ws.aconnect_ws(
            url, http, subprotocols=[PROTOCOL], keepalive_ping_interval_seconds=None
        ) as ws:
            while True:
                try:
                    message: bytes = await ws.receive_bytes()
                except httpx_ws.WebSocketDisconnect:
                    return
                channel, payload = message[:1], message[1:]
                if channel and channel[0] in (_STDOUT, _STDERR):
                    output.extend(payload[: max(0, EXEC_READ_LIMIT - len(output))])
                elif channel and channel[0] == _STATUS:
                    status = json.loads(payload or b"{}")

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        return bytes(output), TIMED_OUT, True
    except httpx_ws.WebSocketUpgradeError as exc:
        response = exc.response
        raise DriverError(
            f"the Kubernetes API refused to exec in pod {pod}: {response.status_code} "
            f"{response.text[:200]}",
            hint="Check that the pod runs and that corral's account may create pods/exec.",
        ) from exc
    except (OSError, httpx_ws.HTTPXWSException) as exc:
        raise DriverError(f"cannot reach the Kubernetes API to exec in pod {pod}: {exc}") from exc
    return bytes(output), exit_code(status), False


def secret_names(pod: dict[str, Any]) -> set[str]:
    """The Secrets a pod's spec references: env `secretKeyRef`s and projected volumes."""
    spec = pod.get("spec") or {}
    names = set()
    for container in spec.get("containers") or []:
        for entry in container.get("env") or []:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(str(ref["name"]))
    for volume in spec.get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            if source.get("secret"):
                names.add(str(source["secret"]["name"]))
        if volume.get("secret"):
            names.add(str(volume["secret"]["secretName"]))
    return names


class SecretValues:
    """The values of the Secrets a pod references, to redact from exec output (law 5). Held in
    memory only, per Secret: corral's Secrets are immutable, so a name keeps its value."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._known: dict[str, list[str]] = {}

    async def of(self, pod: dict[str, Any]) -> list[str]:
        values: list[str] = []
        for name in sorted(secret_names(pod)):
            if name not in self._known:
                found = await self._cluster.get("Secret", name) or {}
                data = (found.get("data") or {}).values()
                self._known[name] = [base64.b64decode(v).decode(errors="replace") for v in data]
            values.extend(self._known[name])
        return values
