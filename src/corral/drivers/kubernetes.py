"""The `kubernetes` driver: each release is a ReplicaSet whose `replicas` corral sets.

Kubernetes places, schedules and restarts pods; corral decides how many of each release run
and which one goes (its roll-out strategies, unchanged). Per instance:

- **start**: the record is written first (law 7); the release's Secrets, claims and
  ReplicaSet are created if absent (the template never changes: law 1), `replicas` is set to
  the number of live records of that ReplicaSet (level-triggered: a crash between two steps
  converges on the next call), and a pod the ReplicaSet made that no instance has claimed yet
  is claimed by labelling it `io.corral.instance` / `io.corral.serial`.
- **stop** (after corral has routed the instance out and drained it, law 6): the pod is
  annotated with `controller.kubernetes.io/pod-deletion-cost` far below its siblings', then
  `replicas` goes down by one, then the pod is deleted with the stop's grace. A ReplicaSet
  scaled down deletes *some* pod: the cost makes it pick the chosen one (it ranks pods by
  readiness first, then by cost), and the explicit delete makes sure of it; had the
  controller taken a not-ready sibling instead, that sibling is observed exited and replaced
  like any dead instance (law 8), and the ReplicaSet makes a fresh pod for the count.
- **observe**: one list of the environment's pods; a pod whose container was restarted by
  the kubelet is reported exited (corral replaces, it does not repair: law 8).

Per service, with a `gateway` in the settings: a Service per release and an HTTPRoute whose
weights follow corral's router (`set_weights`, called by the executor; kubernetes_traffic.py).

Ownership is what corral recorded (`instances/<env>/<project>/<id>/pod.json`: ReplicaSet,
pod name and uid), never what a pod's labels claim. Logs are copied from the API into the
instance's log file: a running pod's at most every 2 s on observe, and at once when it stops
or fails to start (kubernetes_logs.py). Exec checks run through the API's exec websocket
(kubernetes_exec.py).
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any

from corral.drivers.instance_files import InstanceRecords, check_owner, launch_fields, log_tail
from corral.drivers.kubernetes_api import Cluster
from corral.drivers.kubernetes_exec import SecretValues, exec_in_pod
from corral.drivers.kubernetes_logs import PodLogs
from corral.drivers.kubernetes_manifests import (
    DELETION_COST,
    LABEL,
    TEMPLATE_ANNOTATION,
    ClusterSettings,
    ReleaseSource,
    claims,
    environment_labels,
    release_labels,
    replica_set,
    replica_set_name,
    secret,
)
from corral.drivers.kubernetes_traffic import RouteKeeper
from corral.drivers.protocol import (
    ExecResult,
    LaunchSpec,
    ObservedInstance,
    ObservedState,
    exec_output,
)
from corral.errors import DriverError
from corral.logs.retention import LogPolicy
from corral.paths import Home

_ID_PATTERN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")  # a label value
_RECORD = "pod.json"
_LOWEST_COST = str(-(2**31))  # the annotation is an int32: nothing ranks below it


class KubernetesDriver:
    """Instances as pods of per-release ReplicaSets in one namespace."""

    name = "kubernetes"

    def __init__(
        self,
        home: Path,
        project: str,
        environment: str,
        images: Any = None,
        *,
        settings: dict[str, Any] | None = None,
        startup_check: float = 0.5,
        pod_timeout: float = 300.0,
        poll: float = 0.2,
        log_every: float = 2.0,
        log_policy: LogPolicy | None = None,
    ) -> None:
        given = dict(settings or {})
        self._settings = ClusterSettings.from_settings(given)
        self._cluster = Cluster(
            self._settings.namespace, given.get("kubeconfig"), given.get("context")
        )
        self._book = InstanceRecords(Home(Path(home)), project, environment, _RECORD, _ID_PATTERN)
        self.project = project
        self.environment = environment
        self._images = images  # the image store: the image's user decides runAsNonRoot
        self._startup_check = startup_check  # a restart within this window is a failed start
        self._pod_timeout = pod_timeout  # scheduling + image pull + start, bounded
        self._poll = poll
        self._locks: dict[str, asyncio.Lock] = {}  # per ReplicaSet: scale and claim in turn
        self._logs = PodLogs(self._cluster, every=log_every, policy=log_policy)
        self._secret_values = SecretValues(self._cluster)  # for exec output's redaction
        # an HTTPRoute only where the user named the Gateway it attaches to
        self._routes = (
            RouteKeeper(self._cluster, project, environment, self._settings)
            if given.get("gateway")
            else None
        )

    # -- the Driver interface -----------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> ObservedInstance:
        self._check_spec(spec)
        inst_dir = self._instance_dir(spec.instance_id)
        if inst_dir.exists():
            raise DriverError(
                f"instance id {spec.instance_id!r} was already used in "
                f"{self.project}/{self.environment} ({inst_dir}): instance ids are never reused",
                hint="Start the instance under a new id.",
            )
        src = _release_source(spec)
        rs_name = replica_set_name(src)
        record = _record(spec, rs_name, self._settings.namespace)
        try:
            async with self._lock(rs_name):
                self._book.create(record)
                await self._ensure_objects(spec, src)
                await self._scale(rs_name)
                await self._claim(spec, src, record)
            pod = await self._await_running(record)
        except BaseException as exc:
            await self._abandon(record)  # a failed start leaves nothing behind
            if isinstance(exc, DriverError) or not isinstance(exc, Exception):
                raise
            raise DriverError(f"{spec.instance_id}: could not start: {exc}") from exc
        return self._observed(record, pod)

    async def stop(self, instance_id: str, *, grace: float) -> None:
        record = self._load(instance_id)
        if record is None or record.get("removed"):
            return
        last = await self._retire(record, grace)  # marks it stopping first (write-ahead)
        record["exit_code"] = _exit_code(last) if last is not None else record.get("exit_code")
        record["removed"] = True
        self._write(record)

    async def observe(self) -> list[ObservedInstance]:
        records = self._records()
        if not records:
            return []
        pods = await self._cluster.list("Pod", environment_labels(self.project, self.environment))
        by_uid = {_meta(p).get("uid"): p for p in pods}
        seen = [self._observed(r, by_uid.get(r.get("pod_uid"))) for r in records]
        await asyncio.gather(
            *(
                self._sync_logs(r)
                for r, o in zip(records, seen, strict=True)
                if o.state is ObservedState.RUNNING
            )
        )
        if self._routes is not None:
            await self._routes.retry()
        return sorted(seen, key=lambda o: (o.service, o.serial, o.instance_id))

    async def set_weights(self, service: str, weights: dict[int, int]) -> None:
        """The service's HTTPRoute carries `weights` (release → percent) to a Service per
        release; empty: its route and Services go. A no-op without a `gateway` setting."""
        if self._routes is None:
            return
        ports = {
            int(r["release"]): int(r["port"]) for r in self._records() if r["service"] == service
        }
        await self._routes.set_weights(service, weights, ports)

    async def forget(self, instance_id: str) -> None:
        record = self._load(instance_id)
        if record is None:
            return
        if not record.get("removed"):
            pod = await self._pod(record)
            if self._observed(record, pod).state is ObservedState.RUNNING:
                raise DriverError(
                    f"{instance_id} is still running; it cannot be forgotten", hint="Stop it first."
                )
            await self._retire(record, 0)  # its pod restarts on its own: it must go
        shutil.rmtree(self._instance_dir(instance_id))
        self._logs.forget(instance_id)
        await self._drop_idle_replica_set(str(record["replica_set"]))

    def log_path(self, instance_id: str) -> Path | None:
        return self._book.log_path(instance_id)

    async def exec(self, instance_id: str, argv: list[str], timeout: float) -> ExecResult:
        """Run `argv` in the pod's app container (the API's exec: kubernetes_exec.py), with
        the pod's files, env and security context; secret values redacted from the output."""
        record = self._load(instance_id)
        pod = await self._pod(record) if record is not None else None
        if record is None or self._observed(record, pod).state is not ObservedState.RUNNING:
            raise DriverError(f"{instance_id} is not running: there is nothing to run a command in")
        assert pod is not None
        data, code, timed_out = await exec_in_pod(
            self._cluster.http(), self._settings.namespace, str(record["pod"]), argv, timeout
        )
        secrets = await self._secret_values.of(pod)
        return ExecResult(code, exec_output(data, secrets), timed_out=timed_out)

    async def close(self) -> None:
        await self._cluster.close()

    # -- starting -----------------------------------------------------------------------------

    def _check_spec(self, spec: LaunchSpec) -> None:
        check_owner(spec, self.project, self.environment)
        if not _ID_PATTERN.match(spec.instance_id):
            raise DriverError(
                f"{spec.instance_id!r} is not a usable instance id on Kubernetes",
                hint="Use letters, digits, '.', '_' and '-' (at most 63), like `web-7`.",
            )
        if not self._settings.image_registry:
            raise DriverError(
                "the kubernetes driver needs `kubernetes.image_registry`: the cluster pulls "
                "images from a registry, by digest",
                hint="Push the image (`skopeo copy --preserve-digests oci:$CORRAL_HOME/images:"
                "IMAGE docker://REGISTRY/PROJECT:IMAGE`) and set image_registry in corral.yaml.",
            )

    async def _ensure_objects(self, spec: LaunchSpec, src: ReleaseSource) -> None:
        """Secrets and claims (created if absent: a Secret is immutable, a claim is never
        deleted), then the ReplicaSet, whose template must be the one this release makes."""
        for name, (value, _) in sorted(spec.secrets.items()):
            await self._cluster.create(secret(src, name, value))
        for claim in claims(src, self._settings):
            await self._cluster.create(claim)
        wanted = replica_set(src, self._settings, 0, self._image_user(spec.image_digest))
        made = await self._cluster.create(wanted)
        if made is None:
            found = await self._cluster.get("ReplicaSet", replica_set_name(src)) or {}
            have = (_meta(found).get("annotations") or {}).get(TEMPLATE_ANNOTATION)
            if have != wanted["metadata"]["annotations"][TEMPLATE_ANNOTATION]:
                raise DriverError(
                    f"ReplicaSet {replica_set_name(src)} exists with another pod template "
                    f"(hash {have}): an object of a release is never edited (law 1)",
                    hint="Delete that ReplicaSet if nothing of it should run, or find who "
                    "changed it.",
                )

    async def _scale(self, rs_name: str) -> None:
        """replicas = the live records of this ReplicaSet (held under its lock)."""
        live = sum(
            1
            for r in self._records()
            if r["replica_set"] == rs_name and not r.get("stopping") and not r.get("removed")
        )
        if await self._cluster.get("ReplicaSet", rs_name) is not None:
            await self._cluster.merge_patch("ReplicaSet", rs_name, {"spec": {"replicas": live}})

    async def _claim(self, spec: LaunchSpec, src: ReleaseSource, record: dict[str, Any]) -> None:
        """Label a pod of the ReplicaSet that no instance holds as this instance's."""
        deadline = time.monotonic() + self._pod_timeout
        while True:
            pods = await self._cluster.list("Pod", release_labels(src))
            free = [
                p
                for p in pods
                if LABEL + "instance" not in (_meta(p).get("labels") or {})
                and not _meta(p).get("deletionTimestamp")
            ]
            if free:
                pod = min(
                    free, key=lambda p: (_meta(p).get("creationTimestamp") or "", _meta(p)["name"])
                )
                break
            if time.monotonic() > deadline:
                raise DriverError(
                    f"{spec.instance_id}: ReplicaSet {record['replica_set']} made no pod within "
                    f"{self._pod_timeout:.0f} s",
                    hint="kubectl describe replicaset shows why (quota, admission, …).",
                )
            await asyncio.sleep(self._poll)
        labels = {LABEL + "instance": spec.instance_id, LABEL + "serial": str(spec.serial)}
        claimed = await self._cluster.merge_patch(
            "Pod", _meta(pod)["name"], {"metadata": {"labels": labels}}
        )
        record.update(
            pod=_meta(claimed)["name"], pod_uid=_meta(claimed)["uid"], restarts=_restarts(claimed)
        )
        self._write(record)

    async def _await_running(self, record: dict[str, Any]) -> dict[str, Any]:
        """The pod once its app runs and has kept running `startup_check` seconds."""
        deadline = time.monotonic() + self._pod_timeout
        running_since: float | None = None
        while True:
            pod = await self._pod(record)
            failed = _failure(pod, int(record.get("restarts", 0)))
            if failed is not None:
                log = await self._sync_logs(record, now=True)
                raise DriverError(
                    f"{record['instance_id']}: pod {record['pod']} {failed}",
                    hint=f"Last lines of its log ({log}):\n{log_tail(log)}",
                )
            assert pod is not None
            if _running(pod):
                running_since = running_since or time.monotonic()
                if time.monotonic() - running_since >= self._startup_check:
                    return pod
            elif time.monotonic() > deadline:
                raise DriverError(
                    f"{record['instance_id']}: pod {record['pod']} did not run within "
                    f"{self._pod_timeout:.0f} s ({_waiting_reason(pod)})",
                    hint="kubectl describe pod shows why (image pull, scheduling, …).",
                )
            await asyncio.sleep(self._poll)

    async def _abandon(self, record: dict[str, Any]) -> None:
        """Undo a start that failed: its pod goes, replicas follow, the record goes."""
        if not self._instance_dir(str(record["instance_id"])).exists():
            return
        try:
            await self._retire(record, 0)
        finally:
            shutil.rmtree(self._instance_dir(str(record["instance_id"])), ignore_errors=True)

    # -- retiring -----------------------------------------------------------------------------

    async def _retire(self, record: dict[str, Any], grace: float) -> dict[str, Any] | None:
        """Mark the pod as the cheapest to delete, scale down, delete it; wait until it is
        gone. Returns the pod as last seen (for its exit code)."""
        rs_name = str(record["replica_set"])
        if not record.get("stopping"):
            record["stopping"] = True  # write-ahead: no longer counted in replicas
            self._write(record)
        async with self._lock(rs_name):
            pod = await self._pod(record)
            if pod is not None:
                await self._sync_logs(record, now=True)
                cost = {"metadata": {"annotations": {DELETION_COST: _LOWEST_COST}}}
                # a scale-down made for a sibling's stop may have taken this pod meanwhile
                if (
                    await self._cluster.merge_patch_if_there("Pod", _meta(pod)["name"], cost)
                    is None
                ):
                    pod = None
            await self._scale(rs_name)
            if pod is not None:
                await self._cluster.delete(
                    "Pod", _meta(pod)["name"], grace=max(0, math.ceil(grace))
                )
        last = pod
        deadline = time.monotonic() + grace + 60
        while pod is not None and time.monotonic() < deadline:
            await asyncio.sleep(self._poll)
            last, pod = pod, await self._pod(record)
        if pod is not None:
            raise DriverError(
                f"{record['instance_id']}: pod {record['pod']} is still there {grace + 60:.0f} s "
                "after its deletion",
                hint="kubectl describe pod shows what holds it (a finalizer, a lost node).",
            )
        return last

    async def _drop_idle_replica_set(self, rs_name: str) -> None:
        """A ReplicaSet no record names any more, scaled to 0, has served its release."""
        async with self._lock(rs_name):
            if any(r["replica_set"] == rs_name for r in self._records()):
                return
            found = await self._cluster.get("ReplicaSet", rs_name)
            if found is not None and (found.get("spec") or {}).get("replicas") == 0:
                await self._cluster.delete("ReplicaSet", rs_name)

    # -- observing ----------------------------------------------------------------------------

    async def _pod(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The pod this record claimed (by uid: a new pod of the same name is not it)."""
        if not record.get("pod"):
            return None
        pod = await self._cluster.get("Pod", str(record["pod"]))
        return pod if pod is not None and _meta(pod).get("uid") == record.get("pod_uid") else None

    def _observed(self, record: dict[str, Any], pod: dict[str, Any] | None) -> ObservedInstance:
        alive = (
            pod is not None
            and not record.get("removed")
            and _running(pod)
            and _restarts(pod) == int(record.get("restarts", 0))
            and not _meta(pod).get("deletionTimestamp")
        )
        exit_code = record.get("exit_code")
        if pod is not None and not alive:
            exit_code = _exit_code(pod) if _exit_code(pod) is not None else exit_code
        address = None
        if alive and pod is not None:
            address = f"{(pod.get('status') or {}).get('podIP')}:{_container_port(pod, record)}"
        return ObservedInstance(
            instance_id=str(record["instance_id"]),
            service=str(record["service"]),
            serial=int(record["serial"]),
            release=int(record["release"]),
            state=ObservedState.RUNNING if alive else ObservedState.EXITED,
            address=address,
            driver_ref=f"pod:{record.get('pod') or ''}",
            image_digest=str(record["image_digest"]),
            exit_code=None if alive else exit_code,
            started_at=float(record["created_at"]),
            node=(pod.get("spec") or {}).get("nodeName") if pod is not None else None,
        )

    async def _sync_logs(self, record: dict[str, Any], *, now: bool = False) -> Path:
        path = self._log_file(str(record["service"]), str(record["instance_id"]))
        if record.get("pod"):
            instance_id = str(record["instance_id"])
            lock = self._instance_dir(instance_id) / "log.lock"
            await self._logs.sync(instance_id, str(record["pod"]), path, lock, now=now)
        return path

    # -- the bookkeeping on disk --------------------------------------------------------------

    def _lock(self, rs_name: str) -> asyncio.Lock:
        return self._locks.setdefault(rs_name, asyncio.Lock())

    def _image_user(self, digest: str) -> str | None:
        if self._images is None:
            return None
        try:
            user: str | None = self._images.info(digest).user
        except Exception:  # an image the store lacks: the registry has it; no user known
            return None
        return user

    def _instance_dir(self, instance_id: str) -> Path:
        return self._book.dir(instance_id)

    def _log_file(self, service: str, instance_id: str) -> Path:
        return self._book.log_file(service, instance_id)

    def _write(self, record: dict[str, Any]) -> None:
        self._book.write(record)

    def _records(self) -> list[dict[str, Any]]:
        return self._book.all()

    def _load(self, instance_id: str) -> dict[str, Any] | None:
        return self._book.load(instance_id)


def _release_source(spec: LaunchSpec) -> ReleaseSource:
    """The release as the manifests need it: the launch spec's own fields win over the
    recorded config (they are the same when the executor built it; a test may give none)."""
    recorded = dict(spec.config)
    secrets = recorded.get("secrets") or {}
    config = {
        **recorded,
        "command": spec.command,
        "env": dict(spec.env),
        "port": spec.port,
        "mounts": [
            {"name": m.name, "path": m.path, "per_instance": m.serial is not None}
            for m in spec.mounts
        ],
        "secrets": {
            n: {**(secrets.get(n) or {}), "as": as_} for n, (_, as_) in spec.secrets.items()
        },
    }
    per_serial = any(m.serial is not None for m in spec.mounts)
    return ReleaseSource(
        project=spec.project,
        environment=spec.environment,
        service=spec.service,
        release=spec.release,
        image_digest=spec.image_digest,
        config=config,
        serial=spec.serial if per_serial else None,
    )


def _record(spec: LaunchSpec, rs_name: str, namespace: str) -> dict[str, Any]:
    """Written before anything is made. Names only, never env or secret values (law 5)."""
    return {
        **launch_fields(spec),
        "namespace": namespace,
        "replica_set": rs_name,
        "port": spec.port,
        "env_names": sorted(spec.env),
        "secret_names": sorted(spec.secrets),
        "pod": None,
        "pod_uid": None,
        "restarts": 0,
        "created_at": time.time(),
    }


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta


def _app_status(pod: dict[str, Any]) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == "app":
            found: dict[str, Any] = status
            return found
    return {}


def _restarts(pod: dict[str, Any]) -> int:
    return int(_app_status(pod).get("restartCount") or 0)


def _running(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return (
        status.get("phase") == "Running"
        and bool(status.get("podIP"))
        and "running" in (_app_status(pod).get("state") or {})
    )


def _exit_code(pod: dict[str, Any]) -> int | None:
    app = _app_status(pod)
    for where in (app.get("state") or {}, app.get("lastState") or {}):
        terminated = where.get("terminated")
        if terminated is not None and terminated.get("exitCode") is not None:
            return int(terminated["exitCode"])
    return None


def _failure(pod: dict[str, Any] | None, restarts: int) -> str | None:
    """Why a starting pod has failed, or None while it may still come up."""
    if pod is None:
        return "is gone"
    if _meta(pod).get("deletionTimestamp"):
        return "is being deleted"
    if (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
        return f"ended (exit code {_exit_code(pod)})"
    if _restarts(pod) > restarts or "terminated" in (_app_status(pod).get("state") or {}):
        return f"exited at once with code {_exit_code(pod)}"
    return None


def _waiting_reason(pod: dict[str, Any]) -> str:
    waiting = (_app_status(pod).get("state") or {}).get("waiting") or {}
    phase = (pod.get("status") or {}).get("phase")
    return str(waiting.get("reason") or phase or "no status yet")


def _container_port(pod: dict[str, Any], record: dict[str, Any]) -> int:
    """The port the pod declares (the pod's own, not the launch spec's: they agree on a real
    cluster, where every pod has its own address)."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == "app":
            for port in container.get("ports") or []:
                if port.get("name") == "http":
                    return int(port["containerPort"])
    return int(record["port"])
