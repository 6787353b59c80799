"""The edge between corral and a Docker engine: the SDK imported lazily, errors translated.

The docker SDK is an optional dependency (`pip install 'corral[docker]'`); it is imported only
when a Docker driver is built, so nothing else needs it. Every engine call goes through
`engine_call`, which turns the SDK's and requests' exceptions into DriverError with a message
that says what to do (law of the errors module: translate at the boundary).
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from corral.errors import DriverError, PrerequisiteError

SDK_MISSING = "the docker driver needs the Docker SDK for Python: pip install 'corral[docker]'"
DEFAULT_HOST = "unix:///var/run/docker.sock"
START_ENGINE = (
    "Start the Docker engine (`dockerd >/var/tmp/dockerd.log 2>&1 &`, or "
    "`systemctl start docker`), or point DOCKER_HOST at a running one; `docker info` must answer."
)


def sdk() -> ModuleType:
    """The `docker` package, or PrerequisiteError (exit 2) naming the extra to install."""
    try:
        return importlib.import_module("docker")
    except ImportError as exc:
        raise PrerequisiteError(SDK_MISSING, hint="Or set `driver: local`.") from exc


def connect(host: str | None = None) -> Any:
    """A DockerClient for the engine at `host` (default: the one named by the environment,
    DOCKER_HOST, else the local socket), API version negotiated with it. DriverError when it
    does not answer."""
    docker = sdk()
    _check_socket(host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST)

    def client(version: str, timeout: int) -> Any:
        if host is None:
            return docker.from_env(version=version, timeout=timeout)
        return docker.DockerClient(base_url=host, version=version, timeout=timeout)

    # Asked with a client of our own (not version="auto"), so that a failed attempt leaves
    # no half-built client with an open socket behind.
    probe = client(docker.constants.MINIMUM_DOCKER_API_VERSION, 10)
    try:
        with engine_call(f"connect to the Docker engine{'' if host is None else ' at ' + host}"):
            version = str(probe.api.version(api_version=False)["ApiVersion"])
    finally:
        probe.close()
    return client(version, 60)


def _check_socket(host: str) -> None:
    """Fail clearly when a local engine's socket does not accept (the SDK would leak the
    socket of its failed attempt)."""
    if not host.startswith("unix://"):
        return
    path = host.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError as exc:
            raise DriverError(
                f"could not connect to the Docker engine: the Docker engine does not answer "
                f"at {path} ({exc.strerror or exc})",
                hint=START_ENGINE,
            ) from exc


def is_not_found(exc: BaseException) -> bool:
    return type(exc).__name__ in ("NotFound", "ImageNotFound")


@contextmanager
def engine_call(what: str) -> Iterator[None]:
    """Translate whatever the engine or its transport raises while doing `what`."""
    docker = sdk()
    requests = importlib.import_module("requests")
    try:
        yield
    except docker.errors.APIError as exc:
        if is_not_found(exc):
            raise  # callers decide what a missing container or image means
        raise DriverError(
            f"the Docker engine refused to {what}: {exc.explanation or exc}",
        ) from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise DriverError(
            f"could not {what}: the Docker engine does not answer ({exc})",
            hint=START_ENGINE,
        ) from exc
