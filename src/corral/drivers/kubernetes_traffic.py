"""A kubernetes-driven service's traffic inside the cluster: a Service per release and one
Gateway API HTTPRoute whose weighted backendRefs follow corral's router.

corral's router proxies to pod IPs, which it reaches only when the agent runs inside the
cluster network; from outside, the cluster's own Gateway carries the traffic. So, when the
`kubernetes:` settings name a `gateway`, every change of a service's split (rolling: the
share of ready instances per release; canary: the step's weight; blue-green: the switch) is
written to the HTTPRoute attached to it, the same split the router has. Both stay in step:
neither decides, the executor does.

A release gets its Service before the route names it; a retired release leaves the route
before its Service goes. A write that fails is remembered and tried again on the driver's
next observe (each agent tick) and at the next change; the executor records the failure as
an event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from corral.drivers.kubernetes_api import Cluster, api_status
from corral.drivers.kubernetes_manifests import (
    LABEL,
    ClusterSettings,
    ReleaseSource,
    dns_name,
    environment_labels,
    http_route,
    replica_set_name,
    service,
)
from corral.errors import DriverError


class RouteKeeper:
    """The HTTPRoute and per-release Services of each routed service of one environment."""

    def __init__(
        self, cluster: Cluster, project: str, environment: str, settings: ClusterSettings
    ) -> None:
        self._cluster = cluster
        self.project = project
        self.environment = environment
        self._settings = settings
        self._written: dict[str, dict[int, int]] = {}  # what the cluster has, as last written
        self._owed: dict[str, tuple[dict[int, int], dict[int, int]]] = {}  # failed: retried
        self._locks: dict[str, asyncio.Lock] = {}

    def route_name(self, service_name: str) -> str:
        return dns_name(self.project, self.environment, service_name)

    async def set_weights(
        self, service_name: str, weights: Mapping[int, int], ports: Mapping[int, int]
    ) -> None:
        """Make the cluster carry `weights` (release → percent; empty: no route) to each
        release's Service (on `ports[release]`). Nothing is sent when it already does."""
        async with self._lock(service_name):
            await self._set(service_name, dict(weights), dict(ports))

    async def retry(self) -> None:
        """Write again what failed to be written (called from observe; failures stay owed).
        Read under the lock: a newer split written meanwhile is never overwritten."""
        for service_name in list(self._owed):
            async with self._lock(service_name):
                owed = self._owed.get(service_name)
                if owed is not None:
                    with contextlib.suppress(DriverError):  # still refused: the event said so
                        await self._set(service_name, *owed)

    def _lock(self, service_name: str) -> asyncio.Lock:
        return self._locks.setdefault(service_name, asyncio.Lock())

    async def _set(self, service_name: str, wanted: dict[int, int], at: dict[int, int]) -> None:
        if self._written.get(service_name) == wanted:
            self._owed.pop(service_name, None)
            return
        self._written.pop(service_name, None)  # unknown until this write is done
        self._owed[service_name] = (wanted, at)
        await self._write(service_name, wanted, at)
        self._owed.pop(service_name, None)
        self._written[service_name] = wanted

    async def _write(
        self, service_name: str, weights: dict[int, int], ports: dict[int, int]
    ) -> None:
        labels = {
            **environment_labels(self.project, self.environment),
            LABEL + "service": service_name,
        }
        have = {
            str((svc.get("metadata") or {}).get("name")): svc
            for svc in await self._cluster.list("Service", labels)
        }
        sources = [self._source(service_name, n, ports.get(n)) for n in sorted(weights)]
        for src in sources:  # a backend exists before the route names it
            if replica_set_name(src) not in have:
                await self._cluster.create(service(src))
        name = self.route_name(service_name)
        if sources:
            route = http_route(
                self.project,
                self.environment,
                service_name,
                [(src, weights[src.release]) for src in sources],
                self._settings,
            )
            if await self._create_route(route) is None:  # it exists: its spec is replaced
                patch = {"metadata": {"labels": route["metadata"]["labels"]}, "spec": route["spec"]}
                await self._cluster.merge_patch("HTTPRoute", name, patch)
        else:
            await self._cluster.delete("HTTPRoute", name)
        kept = {replica_set_name(src) for src in sources}
        for svc_name in sorted(set(have) - kept):  # retired: out of the route first, then gone
            await self._cluster.delete("Service", svc_name)

    async def _create_route(self, route: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return await self._cluster.create(route)
        except DriverError as exc:
            if api_status(exc) != 404:
                raise
            raise DriverError(
                "the cluster has no Gateway API HTTPRoute resource (gateway.networking.k8s.io"
                f"/v1), so the route {route['metadata']['name']} cannot be written",
                hint="Install the Gateway API CRDs (standard channel, v1.0 or later) and a "
                "Gateway named as `kubernetes.gateway`, or remove that setting.",
            ) from exc

    def _source(self, service_name: str, release: int, port: int | None) -> ReleaseSource:
        """The release as its Service needs it: names, labels and the port (no serial: the
        Service selects the pods of every serial of the release)."""
        return ReleaseSource(
            project=self.project,
            environment=self.environment,
            service=service_name,
            release=release,
            image_digest="",
            config={} if port is None else {"port": port},
        )
