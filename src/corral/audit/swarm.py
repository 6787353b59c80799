"""Auditing the instances of the `swarm` driver: each task through its own node's engine.

An instance is one Swarm service (drivers/swarm.py). Its running task, the node it runs on and
its container come from the manager; the container is then inspected and diffed through that
node's engine (one of `swarm.node_engines`, or the manager's on a one-host swarm), with short
timeouts: a node that does not answer makes its instances "not audited", never clean, and
never hangs the pass.

- config: `docker inspect` against the driver's record (audit/docker_config.py, as on Docker):
  image id (the config digest corral loaded), command, env by keyed hash, read-only root,
  capabilities, restart policy. `no-new-privileges` is not checked: Swarm cannot set it
  before API 1.44.
- files: the container's own writable layer through the engine's diff (audit/container_diff.py).
- not checked: the image's layer files. The engine API cannot re-hash them on a remote node;
  the report says so on every instance's line instead of implying they were looked at.

It reports; the agent replaces a drifted or tampered task (law 8).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from corral.audit.container_diff import diff_findings
from corral.audit.docker import mount_points
from corral.audit.docker_config import compare_container
from corral.audit.keys import home_key
from corral.audit.live import live_instances
from corral.audit.node_engines import TIMEOUT, NodeEngine, NodeEngines
from corral.audit.report import InstanceFinding
from corral.drivers.docker_common import LABEL
from corral.drivers.docker_engine import engine_call, is_not_found
from corral.drivers.protocol import ObservedState
from corral.drivers.swarm import SwarmDriver
from corral.drivers.swarm_tasks import node_is_up, task_view
from corral.errors import CorralError, DriverError
from corral.images.store import ImageStore
from corral.paths import Home
from corral.state.protocol import StateStore
from corral.state.records import InstanceState

NOT_REHASHED = "image files not re-hashed on remote nodes (the engine API cannot read them)"


class _Swarm:
    """One read of the manager: services by id, tasks by service id, nodes by id."""

    def __init__(self, api: Any, project: str, environment: str, ids: list[str]) -> None:
        filters = {"label": [f"{LABEL}project={project}", f"{LABEL}environment={environment}"]}
        with engine_call("list swarm services"):
            self.services = {str(s["ID"]): s for s in api.services(filters=filters)}
        self.tasks: dict[str, list[dict[str, Any]]] = {}
        wanted = [i for i in ids if i in self.services]
        if wanted:
            with engine_call("list swarm tasks"):
                for task in api.tasks(filters={"service": wanted}):
                    self.tasks.setdefault(str(task.get("ServiceID")), []).append(task)
        with engine_call("list swarm nodes"):
            self.nodes = {str(n["ID"]): n for n in api.nodes()}


class SwarmAuditor:
    """The swarm twin of InstanceAuditor (same `audit`); keep one per agent (it keeps its
    engine clients and which engine is which node). Blocking: call it from a worker thread."""

    def __init__(
        self, home: Home, driver: SwarmDriver, images: ImageStore, *, timeout: float = TIMEOUT
    ) -> None:
        self.driver = driver
        self.images = images
        self.nodes = NodeEngines(self.driver.engines, timeout=timeout)
        self._key = home_key(home.root)

    def close(self) -> None:
        """Close its own engine clients (the driver is the caller's)."""
        self.nodes.close()

    def audit(
        self, store: StateStore, *, service: str | None = None, full: bool = False
    ) -> list[InstanceFinding]:
        """Every live instance recorded in `store` (of `service`, or all). `full` changes
        nothing here: the engine's diff has no cache to bypass."""
        live = live_instances(store, service)
        launched = {str(r["instance_id"]): r for r in self.driver.records()}
        swarm: _Swarm | None = None
        manager_down = ""
        if any(record.state is InstanceState.RUNNING for record, _ in live):
            ids = [str(r.get("service_id")) for r in launched.values() if r.get("service_id")]
            driver = self.driver
            try:
                swarm = _Swarm(driver.engines.manager(), driver.project, driver.environment, ids)
            except DriverError as exc:
                manager_down = f"the swarm manager does not answer: {exc.message}"
        self.nodes.begin_pass()
        results = []
        for record, base in live:
            if record.state is not InstanceState.RUNNING:
                results.append(replace(base, skipped=f"{record.state} (in a roll-out's hands)"))
            elif swarm is None:
                results.append(replace(base, not_audited=(manager_down,)))
            else:
                results.append(self._instance(base, launched.get(record.id), swarm))
        return sorted(results, key=lambda f: (f.service, f.instance_id))

    def _instance(
        self,
        base: InstanceFinding,
        launched: dict[str, Any] | None,
        swarm: _Swarm,
    ) -> InstanceFinding:
        if launched is None or not launched.get("service_id"):
            return replace(base, not_audited=("no swarm driver record of its service",))
        service = swarm.services.get(str(launched["service_id"]))
        if service is None:
            return replace(
                base,
                not_audited=(f"its swarm service {launched['name']} is gone (removed by hand?)",),
            )
        tasks = swarm.tasks.get(str(service["ID"]), [])
        view = task_view(service, tasks, swarm.nodes, int(launched["port"]))
        task = next((t for t in tasks if t.get("ID") == view.task_id), None)
        node_id = str((task or {}).get("NodeID") or "")
        node = view.node or node_id or "unknown"
        at_node = replace(base, node=node)
        if view.state is not ObservedState.RUNNING or not view.container_id or not node_id:
            known = swarm.nodes.get(node_id)
            if known is not None and not node_is_up(known):
                state = known.get("Status", {}).get("State")
                why = f"node {node} does not answer (the swarm manager sees it {state})"
            else:
                why = "its task is not running now (Swarm is starting or moving it)"
            return replace(at_node, not_audited=(why,))
        engine = self.nodes.of_node(node_id)
        at_node = replace(at_node, engine=engine.host or None)
        if engine.api is None:
            return replace(at_node, not_audited=(f"node {node} does not answer: {engine.why}",))
        try:
            return self._container(at_node, launched, engine, task or {}, view.container_id)
        except DriverError as exc:
            return replace(at_node, not_audited=(f"node {node} does not answer: {exc.message}",))

    def _container(
        self,
        base: InstanceFinding,
        launched: dict[str, Any],
        engine: NodeEngine,
        task: dict[str, Any],
        cid: str,
    ) -> InstanceFinding:
        try:
            found = self.nodes.call(
                engine, f"inspect container {cid[:12]}", "inspect_container", cid
            )
            changes = self.nodes.call(engine, f"diff container {cid[:12]}", "diff", cid)
        except Exception as exc:
            if not is_not_found(exc):
                raise
            return replace(
                base, not_audited=(f"its container {cid[:12]} is gone from node {base.node}",)
            )
        try:
            image_id = self.images.info(base.image_digest).config_digest
        except CorralError as exc:  # not compared then, and said so: never clean
            image_id = str(found.get("Image") or "")
            base = replace(base, not_audited=(f"image: {exc.message}",))
        expected = {**launched, "image_id": image_id}  # the config digest corral loaded
        config = compare_container(expected, found, key=self._key, no_new_privileges=False)
        files = diff_findings(changes or [], mount_points(found) | secret_points(task))
        return replace(base, files=tuple(files), config=tuple(config), unchecked=(NOT_REHASHED,))


def secret_points(task: dict[str, Any]) -> set[str]:
    """Where Swarm mounts the task's secrets (relative paths): not in `docker inspect`'s
    mounts, yet the engine makes their mount points in the container's own layer."""
    spec = (task.get("Spec") or {}).get("ContainerSpec") or {}
    names = [str((ref.get("File") or {}).get("Name") or "") for ref in spec.get("Secrets") or []]
    return {
        (name if name.startswith("/") else f"/run/secrets/{name}").strip("/")
        for name in names
        if name
    }


def audit_swarm(
    home: Home,
    project: str,
    environment: str,
    store: StateStore,
    *,
    settings: dict[str, Any] | None = None,
    images: ImageStore | None = None,
    service: str | None = None,
) -> list[InstanceFinding]:
    """One pass (see SwarmAuditor), for the CLI."""
    images = images or ImageStore(home.images, home.rootfs)
    driver = SwarmDriver(home.root, project, environment, images, settings=settings)
    auditor = SwarmAuditor(home, driver, images)
    try:
        return auditor.audit(store, service=service)
    finally:
        auditor.close()
        driver.close()
