"""Builds what an agent (or a read-only CLI command) works with, from a home and a scope."""

from __future__ import annotations

from typing import Any

from corral.drivers.local import LocalDriver
from corral.drivers.protocol import Driver, ImageRuntime
from corral.drivers.registry import create_driver
from corral.images.store import ImageStore
from corral.paths import Home
from corral.router.proxy import EmbeddedRouter
from corral.state.open import open_state
from corral.state.protocol import StateStore


def scope(project: str, environment: str) -> str:
    """The state store's namespace: one project's environment."""
    return f"{project}/{environment}"


def open_store(home: Home, project: str, environment: str, url: str | None) -> StateStore:
    home.ensure()
    return open_state(url, scope(project, environment), home.root)


def image_store(home: Home) -> ImageStore:
    return ImageStore(home.images)


def build_driver(
    home: Home,
    project: str,
    environment: str,
    driver: str = "local",
    settings: dict[str, Any] | None = None,
) -> Driver:
    """The driver called `driver`, with its spec settings (`swarm:`, `kubernetes:`, and
    `logs:`, which every driver's log copies rotate by)."""
    from corral.logs.retention import LogPolicy

    images = image_store(home)
    settings = dict(settings or {})
    logs = settings.pop("logs", None)
    policy = LogPolicy.from_settings(logs) if logs else None
    if driver == "docker":  # imported here: the docker SDK is an optional dependency
        from corral.drivers.docker import DockerDriver

        return DockerDriver(home.root, project, environment, images, log_policy=policy)
    if driver in ("swarm", "kubernetes"):
        return create_driver(
            driver,
            home=home.root,
            project=project,
            environment=environment,
            images=images,
            settings=settings,
            log_policy=policy,
        )

    def resolve(digest: str) -> ImageRuntime:
        info = images.info(digest)
        return ImageRuntime(
            rootfs=images.rootfs(digest),
            cmd=list(info.cmd),
            env=dict(info.env),
            workdir=info.workdir or "/",
            has_os=info.has_os,  # a busybox-based image runs on its own /bin, not the host's
        )

    return LocalDriver(home.root, project, environment, resolve, log_policy=policy)


def build_runtime(
    home: Home,
    project: str,
    environment: str,
    state_url: str | None,
    driver: str = "local",
    settings: dict[str, Any] | None = None,
) -> tuple[StateStore, Driver, EmbeddedRouter]:
    built = build_driver(home, project, environment, driver, settings)  # may refuse: first
    store = open_store(home, project, environment, state_url)
    return store, built, EmbeddedRouter()
