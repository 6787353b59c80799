"""The engine behind the CLI: spec → bake → plan → target for the agent. No UI here.

The CLI parses and renders; this module decides nothing itself either: it wires the spec,
the image store, the state store and the pure planner together.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.agent.runtime import build_driver, image_store, open_store
from corral.errors import UsageError
from corral.exec_checks import refuse_exec_without_support
from corral.images.lifecycle import deployable
from corral.images.model import ImageRef
from corral.images.recipes import bake_images
from corral.inventory import observed_views, recorded_services
from corral.paths import Home
from corral.plan.diff import diff
from corral.plan.model import ActionKind, DesiredService, Plan
from corral.releases import config_hash, release_config
from corral.secrets.resolve import spec_secrets
from corral.spec.load import LoadedSpec, load_spec
from corral.spec.model import Spec
from corral.state.protocol import StateStore
from corral.volumes import check_volume_paths, handover_timeout


@dataclass
class Context:
    """Where a command works: the spec, the home, the environment, the state URL."""

    spec_path: Path
    home: Home
    environment: str
    state_url: str | None

    _loaded: LoadedSpec | None = None
    _store: StateStore | None = None

    @property
    def loaded(self) -> LoadedSpec:
        if self._loaded is None:
            self._loaded = load_spec(self.spec_path)
        return self._loaded

    @property
    def project(self) -> str:
        return self.loaded.project

    @property
    def spec(self) -> Spec:
        """The spec as this environment sees it (its `environments:` entry applied)."""
        spec = self.loaded.spec
        if spec.environments and self.environment not in spec.environments:
            where = self.loaded.position(("environments",), key=True)
            line = f":{where[0]}" if where else ""
            raise UsageError(
                f"{self.loaded.path}{line}: environment {self.environment!r} is not declared "
                "under `environments:`",
                hint=f"Pass -e with one of: {', '.join(spec.environments)} (or declare it).",
            )
        return spec.for_environment(self.environment)

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = open_store(self.home, self.project, self.environment, self.state)
        return self._store

    @property
    def state(self) -> str | None:
        """The state URL: $CORRAL_STATE_URL, else the spec's `state:`, else None (SQLite)."""
        return self.state_url or os.environ.get("CORRAL_STATE_URL") or self.spec.state

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def settings_of(service: Any) -> dict[str, Any]:
    """What configures a service without making a release: route, strategy, stop, drain."""
    return {
        "route": service.route.model_dump() if service.route else None,
        "strategy": service.strategy.model_dump(),
        "stop_grace": service.stop_grace,
        "drain_timeout": service.drain_timeout,
        # only with a single_writer volume, so other services' settings stay as they were
        **({"handover_timeout": t} if (t := handover_timeout(service)) is not None else {}),
    }


def bake_all(
    ctx: Context,
    *,
    progress: Callable[[str, ImageRef], None] | None = None,
    update_bases: bool = False,
    on_step: Callable[[str, str], None] | None = None,
) -> dict[str, ImageRef]:
    """Bake every image, bases first, with the bases pinned by corral.lock (images/recipes)."""
    store = image_store(ctx.home)
    images = ctx.loaded.spec.images
    base_dir = ctx.loaded.base_dir
    return bake_images(
        store, images, base_dir, update_bases=update_bases, progress=progress, on_step=on_step
    ).refs


def desired_services(ctx: Context, refs: dict[str, ImageRef]) -> list[DesiredService]:
    desired = []
    for name, service in sorted(ctx.loaded.spec.services.items()):
        config = release_config(
            service, spec_secrets(service.secrets, ctx.store, ctx.home.root, ctx.loaded.base_dir)
        )
        desired.append(
            DesiredService(
                name=name,
                image=service.image,
                # `web`, `web@prod` or `web@sha256:…`; a revoked image is refused (exit 2).
                image_digest=deployable(
                    image_store(ctx.home), service.image, {n: r.digest for n, r in refs.items()}
                ),
                config=config,
                config_hash=config_hash(config),
                replicas=service.replicas,
                settings=settings_of(service),
            )
        )
    # a volume over an image path is a spec problem (exit 2), found before anything starts
    check_volume_paths(ctx.loaded, image_store(ctx.home), {d.name: d.image_digest for d in desired})
    return desired


def observe(ctx: Context) -> list[Any]:
    driver = build_driver(
        ctx.home, ctx.project, ctx.environment, ctx.spec.driver, ctx.spec.driver_settings()
    )
    refuse_exec_without_support(ctx.loaded, ctx.spec, driver)  # exit 2 before anything starts
    return asyncio.run(driver.observe())


def make_plan(ctx: Context, refs: dict[str, ImageRef]) -> Plan:
    return diff(
        desired_services(ctx, refs),
        recorded_services(ctx.store),
        observed_views(observe(ctx)),
        environment=ctx.environment,
        project=ctx.project,
    )


def apply_target(plan: Plan) -> dict[str, Any]:
    """What the agent converges: every service the plan acts on, and those it destroys."""
    by_name = {d.name: d for d in plan.desired}
    services: dict[str, Any] = {}
    destroy: list[str] = []
    for action in plan.actions:
        if action.kind is ActionKind.DESTROY:
            destroy.append(action.service)
            continue
        desired = by_name[action.service]
        services[action.service] = {
            "image": desired.image,
            "image_digest": desired.image_digest,
            "config": desired.config,
            "config_hash": desired.config_hash,
            "replicas": desired.replicas,
            "settings": desired.settings,
        }
    return {
        "operation": "apply",
        "services": services,
        "destroy": sorted(destroy),
    }


def rollback_target(store: StateStore, service: str, to: str | None) -> dict[str, Any]:
    """A target that runs an earlier release again: `to` (rN) or the one before the current."""
    from corral.errors import UsageError

    record = store.get_service(service)
    if record is None or record.current_release is None:
        raise UsageError(
            f"no service named {service!r} is running in this environment",
            hint="`corral status` lists the recorded services.",
        )
    releases = store.list_releases(service)
    if to is not None:
        number = int(to.lstrip("r")) if to.lstrip("r").isdigit() else -1
        chosen = next((r for r in releases if r.number == number), None)
        if chosen is None:
            known = ", ".join(r.name for r in releases)
            raise UsageError(f"{service} has no release {to!r} (releases: {known})")
    else:
        older = [r for r in releases if r.number < record.current_release]
        if not older:
            raise UsageError(
                f"{service} has no release before r{record.current_release}",
                hint="Pass --to rN to choose one.",
            )
        chosen = older[-1]
    return {
        "operation": "rollback",
        "services": {
            service: {
                "image": "",
                "image_digest": chosen.image_digest,
                "config": chosen.config,
                "config_hash": chosen.config_hash,
                "replicas": record.replicas,
                "settings": record.settings,
            }
        },
        "destroy": [],
    }


def destroy_target(store: StateStore, services: list[str] | None) -> dict[str, Any]:
    recorded = [s.name for s in store.list_services()]
    names = recorded if not services else [s for s in services if s in recorded]
    return {"operation": "destroy", "services": {}, "destroy": sorted(names)}
