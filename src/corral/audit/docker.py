"""Auditing the instances of the `docker` driver: files from the host, config from the engine.

Every corral container has a read-only root, so what can change its files is the host: the
image's layers on disk (shared by every container of the image) or the container's own
writable layer. On a local engine both are read from the host through the overlay2
directories `docker inspect` names (`GraphDriver.Data`): the image's layers once per image
(merged as overlay merges them) against its manifest, and each container's `UpperDir`, which
holds only the engine's mount points when nobody wrote to it. A remote engine's layers are
not on this host: its containers' files are reported "not audited", never clean (reading them
through `docker cp`/`get_archive` would copy every file of every container on every pass).

The config is `docker inspect` against what corral launched (audit/docker_config.py).
It reports; the agent acts (law 8). A tampered image layer cannot be fixed by replacing the
containers (a fresh one shares the same layer, and the engine refuses to drop an image that
containers use): it is reported as such, shared by all the image's containers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from corral.audit.docker_config import compare_container
from corral.audit.keys import audit_dir, home_key
from corral.audit.overlay import container_findings, image_findings
from corral.audit.report import Finding, InstanceFinding
from corral.audit.statcache import StatCache
from corral.drivers.docker import DockerDriver
from corral.drivers.docker_strangers import Stranger
from corral.errors import CorralError
from corral.images.model import FileEntry
from corral.images.store import ImageStore
from corral.paths import Home
from corral.state.protocol import StateStore
from corral.state.records import InstanceRecord, InstanceState, Release


@dataclass(frozen=True)
class _Layers:
    findings: tuple[Finding, ...] = ()
    not_audited: str | None = None


class DockerAuditor:
    """The docker twin of InstanceAuditor (same `audit`); keep one per agent for its caches.
    Blocking: call it from a worker thread in the agent."""

    def __init__(
        self,
        home: Home,
        project: str,
        environment: str,
        images: ImageStore,
        *,
        driver: DockerDriver | None = None,
        workers: int | None = None,
    ) -> None:
        self.driver = driver or DockerDriver(home.root, project, environment, images)
        self.images = images
        self.workers = workers
        self._key = home_key(home.root)
        cache_file = audit_dir(home.root) / f"statcache-docker-{project}-{environment}.json"
        self.cache = StatCache(cache_file, self._key)
        self._manifests: dict[str, list[FileEntry]] = {}

    def strangers(self) -> list[Stranger]:
        return self.driver.find_strangers()

    def audit(
        self, store: StateStore, *, service: str | None = None, full: bool = False
    ) -> list[InstanceFinding]:
        records = store.list_instances(service)
        launched = {str(r["instance_id"]): r for r in self.driver.records()}
        releases: dict[tuple[str, int], Release | None] = {}
        for record in records:
            key = (record.service, record.release)
            if key not in releases:
                releases[key] = store.get_release(*key)
        inspected: dict[str, dict[str, Any] | None] = {}
        for record in records:
            cid = (launched.get(record.id) or {}).get("container_id")
            if record.state is InstanceState.RUNNING and cid:
                inspected[record.id] = self.driver.inspect(str(cid))
        by_digest: dict[str, list[str]] = {}
        for record_id, found in inspected.items():
            if found is not None:
                digest = str(launched[record_id]["image_digest"])
                by_digest.setdefault(digest, []).append(record_id)
        layers: dict[tuple[str, tuple[str, ...]], _Layers] = {}
        results = []
        for record in records:
            release = releases[(record.service, record.release)]
            base = InstanceFinding(
                instance_id=record.id,
                service=record.service,
                release=record.release,
                image_digest=release.image_digest if release else "",
            )
            results.append(
                self._instance(
                    base, record, launched.get(record.id), inspected, layers, by_digest, full
                )
            )
        self.cache.save()
        return results

    def _instance(
        self,
        base: InstanceFinding,
        record: InstanceRecord,
        launched: dict[str, Any] | None,
        inspected: dict[str, dict[str, Any] | None],
        layers: dict[tuple[str, tuple[str, ...]], _Layers],
        by_digest: dict[str, list[str]],
        full: bool,
    ) -> InstanceFinding:
        if record.state is not InstanceState.RUNNING:
            return replace(base, skipped=f"{record.state} (in a roll-out's hands)")
        if launched is None or not launched.get("container_id"):
            return replace(base, not_audited=("no docker driver record of its container",))
        found = inspected.get(record.id)
        if found is None:
            why = self.driver.recreated_evidence(launched) or (
                f"container {str(launched['container_id'])[:12]} is gone (removed by hand?)"
            )
            return replace(base, config=(Finding("container", "container", why),))
        config = tuple(compare_container(launched, found, key=self._key))
        digest = str(launched["image_digest"])
        graph = found.get("GraphDriver") or {}
        unreadable = _unreadable(graph)
        if unreadable is not None:
            return replace(base, config=config, not_audited=(f"files: {unreadable}",))
        data = graph["Data"]
        image_layers = tuple(
            d
            for d in str(data.get("LowerDir") or "").split(":")
            if d and not d.endswith("-init/diff")
        )
        try:
            expected = self._manifest(digest)
        except CorralError as exc:
            return replace(base, config=config, not_audited=(f"files: {exc.message}",))
        key = (digest, image_layers)
        if key not in layers:
            layers[key] = _Layers(
                findings=tuple(
                    image_findings(
                        image_layers, expected, self.cache, full=full, workers=self.workers
                    )
                )
            )
        own = container_findings(
            str(data["UpperDir"]),
            {entry.path: entry for entry in expected},
            mount_points(found),
            self.cache,
            full=full,
            workers=self.workers,
        )
        shared = layers[key].findings
        return replace(
            base,
            files=tuple(own),
            config=config,
            layer_files=shared,
            layers=":".join(image_layers) if shared else None,
            shared_with=tuple(i for i in by_digest.get(digest, []) if i != record.id)
            if shared
            else (),
        )

    def _manifest(self, digest: str) -> list[FileEntry]:
        if digest not in self._manifests:  # immutable: the blob is checked by its digest
            self._manifests[digest] = self.images.file_manifest(digest)
        return self._manifests[digest]


def _unreadable(graph: dict[str, Any]) -> str | None:
    """Why a container's layers cannot be read from this host, or None."""
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return f"remote engine ({host}): its layers are not on this host"
    if graph.get("Name") != "overlay2":
        return f"the engine's storage driver is {graph.get('Name')!r}, not overlay2"
    upper = str((graph.get("Data") or {}).get("UpperDir") or "")
    if not upper or not os.access(upper, os.R_OK | os.X_OK):
        return f"the engine's storage ({upper or 'unknown'}) is not readable here (run as root)"
    return None


def mount_points(inspect: dict[str, Any]) -> set[str]:
    """Paths (relative) the engine makes in a container's own layer to mount onto."""
    host = inspect.get("HostConfig") or {}
    points = {str(p) for p in (host.get("Tmpfs") or {})}
    points |= {str(m.get("Destination")) for m in inspect.get("Mounts") or []}
    if host.get("Init"):
        points.add("/sbin/docker-init")
    return {p.strip("/") for p in points if p.strip("/")}


def audit_docker(
    home: Home,
    project: str,
    environment: str,
    store: StateStore,
    *,
    images: ImageStore | None = None,
    service: str | None = None,
    full: bool = False,
) -> tuple[list[InstanceFinding], list[Stranger]]:
    """One pass (see DockerAuditor), and the strangers wearing this environment's labels."""
    auditor = DockerAuditor(
        home, project, environment, images or ImageStore(home.images, home.rootfs)
    )
    try:
        return auditor.audit(store, service=service, full=full), auditor.strangers()
    finally:
        auditor.driver.close()
