"""The `swarm` driver: each corral instance is one Docker Swarm service with replicas=1.

Why one service per *instance*, not per release: corral owns the roll-out, and law 6 asks it
to take a *chosen* instance out of routing and drain it before it stops. Swarm's scale-down
picks the task it stops by itself, so a release-sized service scaled by corral could stop an
instance that still receives traffic. With one service per instance, corral stops exactly the
one it drained; a release is the set of services carrying its label
(`docker service ls --filter label=io.corral.release=r3`). Swarm still does what it is good
at for that one task: placement across nodes, restarts after a crash, rescheduling off a lost
node.

Ownership is what corral recorded, as with the docker driver: per instance a record is written
before the service is created and again with its id right after (law 7); a service that merely
carries corral's labels is a stranger and is never touched.

    instances/<environment>/<project>/<instance_id>/service.json
        labels, port, image tag, Swarm secret names, and once created the service id; after a
        stop, the exit code (the service itself is removed by stop)
    logs/<environment>/<project>/<service>/<instance_id>.log
        the task's output through the manager's service-logs API, copied on observe

Images reach every node without a registry: corral loads each image into every engine of
`node_engines` (docker_images.ensure_image) and names it by the tag it gave it. Traffic: each
task publishes the app's port in host mode on a port its engine picks; the address is the
node's swarm address plus that port (swarm_tasks.py). Swarm's routing mesh and VIPs are not
used (they need IPVS). While Swarm brings a task back (after a crash, or off a lost node) the
instance is observed PENDING: the agent takes it out of routing and routes it again, at its
new address, once probed ready.

Tasks run as law 1 and the no-login policy ask, as far as Swarm's API 1.41 allows: read-only
root filesystem, tmpfs /tmp and /scratch, every capability dropped, an init as PID 1.
`no-new-privileges` cannot be set on a Swarm service before API 1.44 (with no capability
left, a setuid binary gains none). The SDK is synchronous: engine calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any

from corral.audit.launched import launched_env_marks
from corral.drivers import docker_volumes, swarm_secrets
from corral.drivers.docker_common import ID_PATTERN, LABEL, SdkDriver, instance_env, labels
from corral.drivers.docker_engine import engine_call, is_not_found, sdk
from corral.drivers.docker_exec import exec_in_container
from corral.drivers.docker_images import ensure_image, image_tag
from corral.drivers.docker_strangers import label_filters
from corral.drivers.instance_files import launch_fields, log_tail
from corral.drivers.protocol import (
    ExecResult,
    LaunchSpec,
    ObservedInstance,
    ObservedState,
    exec_output,
)
from corral.drivers.swarm_engines import SwarmEngines
from corral.drivers.swarm_tasks import TaskView, node_is_up, on_a_down_node, task_view
from corral.errors import DriverError
from corral.images.store import ImageStore
from corral.logs import engine_copy
from corral.logs.engine_copy import engine_log_options
from corral.logs.format import from_engine
from corral.logs.retention import LogPolicy

log = logging.getLogger(__name__)

_NAME_LIMIT = 63  # Swarm service names are DNS labels
_POLL = 0.1
_TMPFS_BYTES = 64 * 1024 * 1024
_STOP_GRACE = 10.0  # Swarm's own stop grace; corral's shorter grace goes to the node engine
_START_DEADLINE = 120.0  # scheduling, loading from the node's image store, starting
_STOP_DEADLINE = 30.0  # beyond the grace: Swarm's agent on the node reports the task ended
_FAILED = ("failed", "rejected")  # a task that ended on its own, or that its node refused
_LOG_EVERY = 2.0  # seconds between copies of one instance's log on observe
_LOG_TIMEOUT = 3  # seconds of silence before a log read gives up (a node cut off)


class SwarmDriver(SdkDriver):
    """Instances as one-replica Swarm services; adopted across agents through the records."""

    name = "swarm"
    _record = "service.json"
    _runs = "the swarm service it names"

    def __init__(
        self,
        home: Path,
        project: str,
        environment: str,
        images: ImageStore,
        *,
        settings: dict[str, Any] | None = None,
        startup_check: float = 0.2,
        log_policy: LogPolicy | None = None,
    ) -> None:
        super().__init__(home, project, environment, images, log_policy)
        self.engines = SwarmEngines(settings or {})
        self._startup_check = startup_check
        self._logged_at: dict[str, float] = {}

    # -- the Driver interface (start, stop, observe, forget, log_path: SdkDriver) -------------

    async def exec(self, instance_id: str, argv: list[str], timeout: float) -> ExecResult:
        """`docker exec` in the task's container through its node's engine (which must be one
        of `node_engines`); the container's read-only root and dropped capabilities apply."""
        api, container, record = await asyncio.to_thread(self._running_container, instance_id)
        data, code, timed_out = await exec_in_container(
            api, container, argv, timeout, name=record["name"]
        )
        secrets = await asyncio.to_thread(self._env_secret_values, record)
        return ExecResult(code, exec_output(data, secrets), timed_out=timed_out)

    def close(self) -> None:
        """Close the connections to the engines (instances keep running)."""
        self.engines.close()

    def records(self) -> list[dict[str, Any]]:
        """What corral launched, one record per instance (for the auditor, audit/swarm.py)."""
        return self._book.all()

    # -- starting -----------------------------------------------------------------------------

    def _check_spec(self, spec: LaunchSpec) -> None:
        if not ID_PATTERN.match(spec.instance_id):
            raise DriverError(f"invalid instance id {spec.instance_id!r}")
        if self._book.dir(spec.instance_id).exists():
            raise DriverError(
                f"instance id {spec.instance_id} was already used; ids are never reused",
                hint="Start a new instance under a new id.",
            )

    def _start(self, spec: LaunchSpec) -> ObservedInstance:
        manager = self.engines.manager()
        self._load_image(spec.image_digest)
        inst_dir = self._book.dir(spec.instance_id)
        record = _record(spec, service_name(spec))
        record["env_marks"] = launched_env_marks(self._images, self._home.root, spec)  # audit
        self._book.create(record)
        try:
            with swarm_secrets.SECRETS_LOCK:
                refs = swarm_secrets.file_secrets(manager, spec)
                record["swarm_secrets"] = [ref["SecretName"] for ref in refs]
                self._book.write(record)
                with engine_call(f"create swarm service {record['name']}"):
                    created = manager.create_service(
                        self._task_template(spec, refs),
                        name=record["name"],
                        labels=labels(spec),
                        mode={"Replicated": {"Replicas": 1}},
                        endpoint_spec={
                            "Mode": "dnsrr",  # no VIP: it needs IPVS, and the router balances
                            "Ports": [
                                {"Protocol": "tcp", "TargetPort": spec.port, "PublishMode": "host"}
                            ],
                        },
                    )
            record["service_id"] = str(created["ID"])
            self._book.write(record)
            return self._running_after_start(spec, record)
        except BaseException:
            with contextlib.suppress(Exception):
                self._remove_service(record)  # a failed start leaves nothing behind
            shutil.rmtree(inst_dir, ignore_errors=True)
            raise

    def _load_image(self, digest: str) -> None:
        """No registry: every node engine gets the image itself. An engine that does not
        answer (its node is lost: Swarm places nothing on a down node) is skipped, so one lost
        node never stops every start; with none answering the start fails."""
        failed = []
        for host, api in self.engines.each_node():
            try:
                # looked up every time: a node's engine may have been rebuilt since, and
                # Swarm, not corral, would meet the missing image (a refused task)
                ensure_image(api(), self._images, digest, self.project, remembered=False)
            except DriverError as exc:
                failed.append(f"{host}: {exc.message}")
        if failed and len(failed) == len(self.engines.each_node()):
            raise DriverError(
                f"no node engine could take image {digest}: " + "; ".join(failed),
                hint="Check the engines in `swarm.node_engines` (`docker -H ADDRESS info`).",
            )
        for failure in failed:
            log.warning("image %s not loaded on a node whose engine does not answer: %s",
                        digest, failure)  # fmt: skip

    def _task_template(self, spec: LaunchSpec, secret_refs: list[Any]) -> Any:
        types = sdk().types
        ContainerSpec, Mount, Placement = types.ContainerSpec, types.Mount, types.Placement
        RestartPolicy, TaskTemplate = types.RestartPolicy, types.TaskTemplate
        tmpfs = [
            Mount(path, "", type="tmpfs", tmpfs_size=_TMPFS_BYTES) for path in ("/tmp", "/scratch")
        ]
        volumes = [
            Mount(
                m.path,
                docker_volumes.volume_name(self.project, self.environment, m),
                type="volume",
                labels=docker_volumes.volume_labels(self.project, self.environment, m),
            )
            for m in spec.mounts
        ]
        container = ContainerSpec(
            image_tag(self.project, spec.image_digest),
            args=spec.command,  # like `docker run IMAGE CMD…`: the image's entrypoint stays
            env=[f"{k}={v}" for k, v in instance_env(spec).items()],
            labels=labels(spec),
            mounts=tmpfs + volumes,
            secrets=secret_refs or None,
            read_only=True,
            init=True,
            cap_drop=["ALL"],
            stop_grace_period=int(_STOP_GRACE * 1e9),
        )
        pinned = self._volume_nodes(spec)
        return TaskTemplate(
            container,
            # Swarm restarts a crashed task and reschedules one off a lost node; an app that
            # exits 0 has ended on purpose and is left ended (corral replaces it)
            restart_policy=RestartPolicy(condition="on-failure", delay=int(1e9)),
            # the engine's own copy stays bounded too (corral keeps the central one)
            log_driver=types.DriverConfig("json-file", engine_log_options(self.log_policy)),
            placement=Placement(constraints=[f"node.id=={pinned}"]) if pinned else None,
        )

    def _volume_nodes(self, spec: LaunchSpec) -> str | None:
        """A per_instance volume lives on the node where its serial first ran: its successor is
        pinned there (else it would start on another node with an empty volume). Found by
        asking each node engine of `node_engines` whether it has the volume."""
        wanted = [
            docker_volumes.volume_name(self.project, self.environment, m)
            for m in spec.mounts
            if m.serial is not None
        ]
        if not wanted or not self.engines.node_hosts:
            return None
        for api in self.engines.node_apis():
            with engine_call("list volumes"):
                names = {v["Name"] for v in api.volumes().get("Volumes") or []}
            if any(name in names for name in wanted):
                with engine_call("ask a node engine which node it is"):
                    node_id = str((api.info().get("Swarm") or {}).get("NodeID") or "")
                return node_id or None
        return None

    def _running_after_start(self, spec: LaunchSpec, record: dict[str, Any]) -> ObservedInstance:
        """Wait until the task runs and has kept running `startup_check` seconds; a task that
        ended (or was refused by its node) in the meantime is a failed start."""
        deadline = time.monotonic() + _START_DEADLINE
        running_since: float | None = None
        while True:
            service, tasks = self._service_and_tasks(record)
            failed = [
                t for t in tasks if t.get("Status", {}).get("State") in ("failed", "rejected")
            ]
            if failed:
                raise self._start_failure(spec, record, failed[-1])
            view = task_view(service, tasks, self._nodes(), int(record["port"]))
            if view.state is ObservedState.RUNNING:
                running_since = running_since or time.monotonic()
                if time.monotonic() - running_since >= self._startup_check:
                    return self._observed(record, view)
            if time.monotonic() > deadline:
                raise DriverError(
                    f"{spec.instance_id}: swarm service {record['name']} did not run within "
                    f"{_START_DEADLINE:g}s",
                    hint="See `docker service ps "
                    f"{record['name']} --no-trunc` on the manager: a node may lack the image "
                    "(list every node's engine in `swarm.node_engines`) or the resources.",
                )
            time.sleep(_POLL)

    def _start_failure(
        self, spec: LaunchSpec, record: dict[str, Any], task: dict[str, Any]
    ) -> DriverError:
        status = task.get("Status", {})
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        self._sync_logs(record, force=True)
        log = self._book.log_file(spec.service, spec.instance_id)
        why = f"exited at once with code {code}" if code else f"was refused: {status.get('Err')}"
        return DriverError(
            f"{spec.instance_id}: swarm task of {record['name']} {why}",
            hint=f"Last lines of its log ({log}):\n{log_tail(log)}",
        )

    # -- stopping and forgetting --------------------------------------------------------------

    def _stop(self, instance_id: str, grace: float) -> None:
        record = self._book.load(instance_id)
        if record is None or record.get("removed"):
            return
        service_id = record.get("service_id") or self._created_unrecorded(record)
        if service_id:
            record["service_id"] = service_id
            record["exit_code"] = self._scale_to_zero(record, grace)
        self._remove_service(record)
        record["removed"] = True
        self._book.write(record)

    def _scale_to_zero(self, record: dict[str, Any], grace: float) -> int | None:
        """Swarm stops the task (no restart: it is no longer wanted); the node's engine is asked
        to stop it within corral's grace, and the ended task's exit code is returned."""
        manager = self.engines.manager()
        service, tasks = self._service_and_tasks(record)
        if service is None:
            return record.get("exit_code")
        view = task_view(service, tasks, self._nodes(), int(record["port"]))
        with engine_call(f"scale swarm service {record['name']} to 0"):
            manager.update_service(
                record["service_id"],
                version=int(service["Version"]["Index"]),
                mode={"Replicated": {"Replicas": 0}},
                fetch_current_spec=True,
            )
        node_api = self._node_api_of(tasks, view)
        if node_api is not None and view.container_id:
            with contextlib.suppress(Exception):  # Swarm's own stop follows anyway
                node_api.stop(view.container_id, timeout=max(0, math.ceil(grace)))
        deadline = time.monotonic() + grace + _STOP_DEADLINE
        while time.monotonic() < deadline:
            service, tasks = self._service_and_tasks(record)
            nodes = self._nodes()  # a task on a node that is down will never say it ended
            if service is None or not any(_is_live(t, nodes) for t in tasks):
                break
            time.sleep(_POLL)
        self._sync_logs(record, force=True)
        return task_view(service, tasks, {}, int(record["port"])).exit_code

    def _forget(self, instance_id: str) -> None:
        record = self._book.load(instance_id)
        if record is None:
            return
        if not record.get("removed"):
            service, tasks = self._service_and_tasks(record)
            view = task_view(service, tasks, self._nodes(), int(record["port"]))
            if view.state is not ObservedState.EXITED:
                raise DriverError(
                    f"{instance_id} is still running; it cannot be forgotten",
                    hint="Stop it first.",
                )
            self._remove_service(record)
        shutil.rmtree(self._book.dir(instance_id))
        self._logged_at.pop(instance_id, None)

    def _remove_service(self, record: dict[str, Any]) -> None:
        """Remove the service this record names (by id; by name only when the id was never
        recorded, and then only if its labels name this instance), then its unused secrets."""
        service_id = record.get("service_id") or self._created_unrecorded(record)
        manager = self.engines.manager()
        with swarm_secrets.SECRETS_LOCK:
            if service_id:
                self._sync_logs({**record, "service_id": service_id}, force=True)
                try:
                    with engine_call(f"remove swarm service {record['name']}"):
                        manager.remove_service(service_id)
                except Exception as exc:
                    if not is_not_found(exc):
                        raise
            swarm_secrets.remove_unused(manager, list(record.get("swarm_secrets") or []))

    def _created_unrecorded(self, record: dict[str, Any]) -> str | None:
        """A service created from this record by a driver that died before writing its id."""
        try:
            with engine_call(f"inspect swarm service {record['name']}"):
                found = self.engines.manager().inspect_service(record["name"])
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        mine = found["Spec"].get("Labels", {}).get(LABEL + "instance") == record["instance_id"]
        return str(found["ID"]) if mine else None

    # -- observing ----------------------------------------------------------------------------

    def _observe(self) -> list[ObservedInstance]:
        records = self._book.all()
        # logs of instances forgotten longer than max_age go (retention, corral.logs)
        self._log_sweeper.maybe({str(r["instance_id"]) for r in records})
        if not records:
            return []
        manager = self.engines.manager()
        filters = label_filters(self.project, self.environment)
        with engine_call("list swarm services"):
            services = {s["ID"]: s for s in manager.services(filters=filters)}
        ids = [str(r["service_id"]) for r in records if r.get("service_id") in services]
        tasks: dict[str, list[dict[str, Any]]] = {}
        if ids:
            with engine_call("list swarm tasks"):
                for task in manager.tasks(filters={"service": ids}):
                    tasks.setdefault(str(task.get("ServiceID")), []).append(task)
        nodes = self._nodes()
        seen = []
        for record in records:
            service = services.get(str(record.get("service_id") or ""))
            if service is not None:
                own = tasks.get(service["ID"], [])
                view = task_view(service, own, nodes, int(record["port"]))
                if not on_a_down_node(own, nodes):  # the manager would wait for its part
                    self._sync_logs(record)
            else:  # stopped (the exit code was kept), or removed behind corral's back
                code = record.get("exit_code")
                view = TaskView(ObservedState.EXITED, exit_code=None if code is None else int(code))
            seen.append(self._observed(record, view))
        return seen

    def _observed(self, record: dict[str, Any], view: TaskView) -> ObservedInstance:
        return ObservedInstance(
            instance_id=str(record["instance_id"]),
            service=str(record["service"]),
            serial=int(record["serial"]),
            release=int(record["release"]),
            state=view.state,
            address=view.address,
            driver_ref=str(record.get("service_id") or ""),
            image_digest=str(record["image_digest"]),
            exit_code=None if view.state is ObservedState.RUNNING else view.exit_code,
            started_at=float(record["created_at"]),
            node=view.node,
        )

    def _service_and_tasks(
        self, record: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        manager = self.engines.manager()
        service_id = record.get("service_id")
        if not service_id:
            return None, []
        try:
            with engine_call(f"inspect swarm service {record['name']}"):
                service: dict[str, Any] = manager.inspect_service(service_id)
            with engine_call(f"list the tasks of {record['name']}"):
                tasks: list[dict[str, Any]] = manager.tasks(filters={"service": service_id})
        except Exception as exc:
            if is_not_found(exc):
                return None, []
            raise
        return service, tasks

    def _nodes(self) -> dict[str, dict[str, Any]]:
        with engine_call("list swarm nodes"):
            return {str(n["ID"]): n for n in self.engines.manager().nodes()}

    def _node_api_of(self, tasks: list[dict[str, Any]], view: TaskView) -> Any | None:
        node_id = next((t.get("NodeID") for t in tasks if t.get("ID") == view.task_id), None)
        return self.engines.api_of_node(str(node_id)) if node_id else None

    def _running_container(self, instance_id: str) -> tuple[Any, str, dict[str, Any]]:
        record = self._book.load(instance_id)
        if record is None or record.get("removed") or not record.get("service_id"):
            raise DriverError(f"{instance_id} is not running: there is nothing to run a command in")
        service, tasks = self._service_and_tasks(record)
        view = task_view(service, tasks, self._nodes(), int(record["port"]))
        if view.state is not ObservedState.RUNNING or not view.container_id:
            raise DriverError(f"{instance_id} is not running: there is nothing to run a command in")
        api = self._node_api_of(tasks, view)
        if api is None:
            raise DriverError(
                f"{instance_id} runs on node {view.node}, whose engine corral cannot reach",
                hint="List every node's Docker API address in `swarm.node_engines`.",
            )
        return api, view.container_id, record

    def _env_secret_values(self, record: dict[str, Any]) -> list[str]:
        """The task's `as: env` secret values, to redact from exec output (law 5)."""
        names = set(record.get("env_secret_names", []))
        if not names or not record.get("service_id"):
            return []
        with engine_call(f"inspect swarm service {record['name']}"):
            service = self.engines.manager().inspect_service(record["service_id"])
        env = service["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env") or []
        pairs = (item.split("=", 1) for item in env if "=" in item)
        return [value for name, value in pairs if name in names]

    def _sync_logs(self, record: dict[str, Any], *, force: bool = False) -> None:
        """Append what the service (all its tasks, through the manager) logged since the last
        copy to the instance's log file (corral.logs.engine_copy), at most every _LOG_EVERY
        seconds unless forced."""
        instance_id = str(record["instance_id"])
        now = time.monotonic()
        if not force and now - self._logged_at.get(instance_id, -_LOG_EVERY) < _LOG_EVERY:
            return
        self._logged_at[instance_id] = now
        path = self._book.log_file(str(record["service"]), instance_id)
        with engine_copy.copying(self._book.dir(instance_id) / engine_copy.LOCK_NAME) as mine:
            if not mine:
                return  # another process (the CLI's observe, the agent's) is copying them
            after = engine_copy.last_stamp(path)
            try:
                with engine_call(f"read the logs of {record['name']}"):
                    data = _read_service_logs(
                        self.engines.manager(), str(record["service_id"]), after
                    )
            except Exception as exc:
                if is_not_found(exc) or isinstance(exc, DriverError):
                    return  # logs are best effort: a node that is down cannot send its part
                raise
            data = engine_copy.newer_than(data, after)
            if data:
                engine_copy.append(path, data, self.log_policy)


def service_name(spec: LaunchSpec) -> str:
    """Unique per instance id (a replacement never clashes with what it replaces), and a
    valid DNS label: a long one is cut and made unique by a hash."""
    base = f"corral-{spec.project}-{spec.environment}-{spec.service}-{spec.instance_id}"
    base = re.sub(r"[^A-Za-z0-9-]", "-", base)
    if len(base) <= _NAME_LIMIT:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:12]
    return f"{base[: _NAME_LIMIT - 13].rstrip('-')}-{digest}"


def _record(spec: LaunchSpec, name: str) -> dict[str, Any]:
    """Written before the service is created. Values stay out (law 5): names only."""
    return {
        **launch_fields(spec),
        "image": image_tag(spec.project, spec.image_digest),
        "name": name,
        "command": spec.command,
        "env_names": sorted(spec.env),
        "env_secret_names": sorted(n for n, (_, as_) in spec.secrets.items() if as_ == "env"),
        "swarm_secrets": [],
        "port": spec.port,
        "service_id": None,
        "created_at": time.time(),
    }


def _is_live(task: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> bool:
    """A task that runs or may still start, on a node that is up (or not placed yet)."""
    state = str(task.get("Status", {}).get("State", ""))
    if state not in ("new", "pending", "assigned", "accepted", "preparing", "starting", "running"):
        return False
    node = nodes.get(str(task.get("NodeID") or ""))
    return node is None if not task.get("NodeID") else node is not None and node_is_up(node)


def _read_service_logs(api: Any, service_id: str, after: int | None) -> bytes:
    """The service's log through the manager since `after` (ns; all of it when None), each
    line stamped with the engine's time and its stream (corral.logs.format), read with a
    timeout: the SDK's own `service_logs` streams without one, and the manager waits forever
    for the part of a node that is cut off (DriverError then, through engine_call)."""
    url = api._url("/services/{0}/logs", service_id)

    def one(stream: str) -> bytes:
        params = {
            "stdout": int(stream == "stdout"),
            "stderr": int(stream == "stderr"),
            "follow": 0,
            "timestamps": 1,
            "tail": "all",
        }
        if after is not None:  # inclusive, a µs early: newer_than drops what repeats
            params["since"] = f"{after / 1e9 - 1e-6:.6f}"
        response = api._get(url, params=params, stream=False, timeout=_LOG_TIMEOUT)
        return bytes(api._get_result_tty(False, response, False))  # demultiplexed

    return from_engine(one("stdout"), one("stderr"))
