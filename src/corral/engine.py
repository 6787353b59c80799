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
from corral.images.model import ImageRef
from corral.inventory import observed_views, recorded_services
from corral.paths import Home
from corral.plan.diff import diff
from corral.plan.model import ActionKind, DesiredService, Plan
from corral.releases import config_hash, release_config
from corral.spec.load import LoadedSpec, load_spec
from corral.state.protocol import StateStore


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
    def store(self) -> StateStore:
        if self._store is None:
            url = self.state_url or os.environ.get("CORRAL_STATE_URL")
            self._store = open_store(self.home, self.project, self.environment, url)
        return self._store

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
    }


def bake_all(
    ctx: Context, *, progress: Callable[[str, ImageRef], None] | None = None
) -> dict[str, ImageRef]:
    store = image_store(ctx.home)
    refs = {}
    for name, recipe in ctx.loaded.spec.images.items():
        ref = store.bake(name, recipe, ctx.loaded.base_dir)
        refs[name] = ref
        if progress is not None:
            progress(name, ref)
    return refs


def desired_services(ctx: Context, refs: dict[str, ImageRef]) -> list[DesiredService]:
    desired = []
    for name, service in sorted(ctx.loaded.spec.services.items()):
        config = release_config(service)
        desired.append(
            DesiredService(
                name=name,
                image=service.image,
                image_digest=refs[service.image].digest,
                config=config,
                config_hash=config_hash(config),
                replicas=service.replicas,
                settings=settings_of(service),
            )
        )
    return desired


def observe(ctx: Context) -> list[Any]:
    driver = build_driver(ctx.home, ctx.project, ctx.environment)
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


def destroy_target(store: StateStore, services: list[str] | None) -> dict[str, Any]:
    recorded = [s.name for s in store.list_services()]
    names = recorded if not services else [s for s in services if s in recorded]
    return {"operation": "destroy", "services": {}, "destroy": sorted(names)}
