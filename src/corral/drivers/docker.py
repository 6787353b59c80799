"""The `docker` driver: each instance is a container on a Docker engine.

Ownership is what corral recorded, never what a container claims: per instance, a record is
written before the container is created and again with its id right after (law 7), and only
containers named by a record are observed, stopped or removed. Labels (`io.corral.*`) make
corral's containers recognisable to people and tools, but a container that merely carries them
is a stranger and is never touched.

    instances/<environment>/<project>/<instance_id>/container.json
        labels, port, image, and once created the container id; after a stop, the exit code
        (the container itself is removed by stop, its record stays until forget)
    logs/<environment>/<project>/<service>/<instance_id>.log
        the container's stdout+stderr, copied from the engine on every observe and before the
        container is removed, so `corral logs` works after it is gone; kept by forget

Containers run as law 1 and the no-login policy ask: read-only root filesystem, private tmpfs
/tmp and /scratch, `no-new-privileges`, every capability dropped, and an init as PID 1 (an app
that ignores SIGTERM as PID 1, like busybox httpd, would cost the full grace on every stop).
The app's port is published on 127.0.0.1 only, on a port the engine picks.

The SDK is synchronous: every engine call runs in a worker thread, so the agent's event loop
(and the router on it) never waits on the engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from corral.audit.docker_config import compare_container, env_marks
from corral.audit.keys import home_key
from corral.drivers import docker_secrets, docker_volumes
from corral.drivers.docker_common import ID_PATTERN, LABEL, SdkDriver, instance_env, labels
from corral.drivers.docker_engine import connect, engine_call, is_not_found
from corral.drivers.docker_exec import exec_in_container
from corral.drivers.docker_images import ensure_image, forget_image
from corral.drivers.docker_strangers import Stranger, find_strangers, label_filters
from corral.drivers.instance_files import launch_fields, log_tail
from corral.drivers.protocol import (
    ExecResult,
    LaunchSpec,
    ObservedInstance,
    ObservedState,
    exec_output,
)
from corral.errors import DriverError
from corral.images.store import ImageStore
from corral.logs import engine_copy
from corral.logs.engine_copy import engine_log_options
from corral.logs.format import from_engine
from corral.logs.retention import LogPolicy

_POLL = 0.05  # seconds between looks at a container we wait for
_TMPFS = "rw,nosuid,nodev,size=64m"
_LOG_EVERY = 2.0  # seconds between copies of a running container's log


class DockerDriver(SdkDriver):
    """Instances as containers; they outlive the agent and are adopted through the records."""

    name = "docker"
    _record = "container.json"
    _runs = "the container it names"

    def __init__(
        self,
        home: Path,
        project: str,
        environment: str,
        images: ImageStore,
        *,
        client: Any = None,
        startup_check: float = 0.1,
        log_policy: LogPolicy | None = None,
    ) -> None:
        super().__init__(home, project, environment, images, log_policy)
        self._client = client  # connected on first use: building a driver needs no engine
        self._startup_check = startup_check  # an exit within this window is a failed start
        self._logs_synced: dict[str, float] = {}  # container id → when its logs were copied

    # -- the Driver interface (start, stop, observe, forget, log_path: SdkDriver) -------------

    async def exec(self, instance_id: str, argv: list[str], timeout: float) -> ExecResult:
        """`docker exec` in the running container: its read-only root, dropped capabilities
        and no-new-privileges apply to the command too (`docker_exec.py`)."""
        record = self._book.load(instance_id)
        if record is None or record.get("removed") or not record.get("container_id"):
            raise DriverError(f"{instance_id} is not running: there is nothing to run a command in")
        data, code, timed_out = await exec_in_container(
            self._api(), record["container_id"], argv, timeout, name=record["name"]
        )
        secrets = await asyncio.to_thread(self._secret_values, record)
        return ExecResult(code, exec_output(data, secrets), timed_out=timed_out)

    def _secret_values(self, record: dict[str, Any]) -> list[str]:
        """The container's `as: env` secret values, to redact from exec output (law 5)."""
        names = set(record.get("secret_names", []))
        if not names:
            return []
        with engine_call(f"inspect container {record['name']}"):
            env = self._api().inspect_container(record["container_id"])["Config"]["Env"] or []
        pairs = (item.split("=", 1) for item in env if "=" in item)
        return [value for name, value in pairs if name in names]

    def close(self) -> None:
        """Close the connections to the engine (instances keep running)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- starting -----------------------------------------------------------------------------

    def _check_spec(self, spec: LaunchSpec) -> None:
        if docker_secrets.file_secrets(spec.secrets):
            docker_secrets.check_possible(spec.instance_id)  # in memory, on this host
        if not ID_PATTERN.match(spec.instance_id):
            raise DriverError(
                f"{spec.instance_id!r} is not a usable instance id",
                hint="Use letters, digits, '.', '_' and '-' (at most 128), like `web-7`.",
            )

    def _start(self, spec: LaunchSpec) -> ObservedInstance:
        inst_dir = self._book.dir(spec.instance_id)
        if os.path.lexists(inst_dir):
            raise DriverError(
                f"instance id {spec.instance_id!r} was already used in "
                f"{self.project}/{self.environment} ({inst_dir}): instance ids are never reused",
                hint="Start the instance under a new id.",
            )
        api = self._api()
        image_id = ensure_image(api, self._images, spec.image_digest, self.project)
        record = _record(spec, image_id, container_name(spec))
        record.update(self._launched(spec))
        self._book.create(record)
        try:
            return self._create_and_run(api, spec, record)
        except BaseException:
            if record["container_id"]:  # never by name here: a clash may name a stranger
                self._remove_container(record)
            docker_secrets.remove(self._secrets_dir(spec.instance_id))
            shutil.rmtree(inst_dir, ignore_errors=True)  # a failed start leaves nothing behind
            raise

    def _secrets_dir(self, instance_id: str) -> Path:
        return docker_secrets.secrets_dir(self.project, self.environment, instance_id)

    def _launched(self, spec: LaunchSpec) -> dict[str, Any]:
        """What the auditor compares the container with (audit/docker_config.py): every env
        variable by keyed hash (law 5), and the volume binds."""
        env = {**self._images.info(spec.image_digest).env, **instance_env(spec)}
        key = home_key(self._home.root)
        files = docker_secrets.file_secrets(spec.secrets)
        secrets_bind = (
            [f"{self._secrets_dir(spec.instance_id)}:{docker_secrets.MOUNT}:ro"] if files else []
        )
        return {
            "env_marks": env_marks(key, env, set(spec.secrets)),
            "binds": [
                f"{docker_volumes.volume_name(self.project, self.environment, m)}:{m.path}:rw"
                for m in spec.mounts
            ]
            + secrets_bind,
        }

    def _create_and_run(
        self, api: Any, spec: LaunchSpec, record: dict[str, Any]
    ) -> ObservedInstance:
        port = spec.port
        # named volumes, read-write; created on first use, never removed with the container
        binds = [
            f"{docker_volumes.ensure(api, self.project, self.environment, m)}:{m.path}:rw"
            for m in spec.mounts
        ]
        files = docker_secrets.file_secrets(spec.secrets)
        if files:  # on the host's tmpfs, bound read-only at /run/secrets
            user = self._images.info(spec.image_digest).user
            binds.append(docker_secrets.write(self._secrets_dir(spec.instance_id), files, user))
        with engine_call(f"create container {record['name']}"):
            host_config = api.create_host_config(
                port_bindings={port: ("127.0.0.1", None)},
                binds=binds or None,
                read_only=True,
                tmpfs={"/tmp": _TMPFS, "/scratch": _TMPFS},
                security_opt=["no-new-privileges"],
                cap_drop=["ALL"],
                init=True,
                restart_policy={"Name": "no"},
                # the engine's own copy stays bounded too (corral keeps the central one)
                log_config={"type": "json-file", "config": engine_log_options(self.log_policy)},
            )

            def create() -> Any:
                return api.create_container(
                    image=record["image_id"],
                    command=spec.command,
                    name=record["name"],
                    labels=labels(spec),
                    environment=instance_env(spec),
                    ports=[port],
                    host_config=host_config,
                    detach=True,
                )

            try:
                created = create()
            except Exception as exc:
                if not is_not_found(exc):
                    raise
                # removed from the engine since this process loaded it: load it again, once
                forget_image(api, record["image_id"])
                ensure_image(api, self._images, spec.image_digest, self.project)
                created = create()
        record["container_id"] = str(created["Id"])
        self._book.write(record)
        with engine_call(f"start container {record['name']}"):
            api.start(record["container_id"])
        inspected = self._running_after(api, record)
        state = inspected["State"]
        if not state.get("Running"):
            self._sync_logs(record)
            code = state.get("ExitCode")
            log = self._book.log_file(spec.service, spec.instance_id)
            raise DriverError(
                f"{spec.instance_id}: container {record['name']} exited at once with code {code}",
                hint=f"Last lines of its log ({log}):\n{log_tail(log)}",
            )
        address = _address(_published(inspected), port)
        if address is None:
            raise DriverError(f"{spec.instance_id}: the engine published no port for {port}")
        return ObservedInstance(
            instance_id=spec.instance_id,
            service=spec.service,
            serial=spec.serial,
            release=spec.release,
            state=ObservedState.RUNNING,
            address=address,
            driver_ref=record["container_id"],
            image_digest=spec.image_digest,
            started_at=float(record["created_at"]),
        )

    def _running_after(self, api: Any, record: dict[str, Any]) -> dict[str, Any]:
        """The container as inspected once it has run `startup_check` seconds, or has ended
        (its published ports come with it: no second call on the roll-out's critical path)."""
        deadline = time.monotonic() + self._startup_check
        while True:
            with engine_call(f"inspect container {record['name']}"):
                inspected: dict[str, Any] = api.inspect_container(record["container_id"])
            if not inspected["State"].get("Running") or time.monotonic() >= deadline:
                return inspected
            time.sleep(_POLL)

    # -- stopping and forgetting --------------------------------------------------------------

    def _stop(self, instance_id: str, grace: float) -> None:
        record = self._book.load(instance_id)
        if record is None or record.get("removed"):
            return
        cid = record.get("container_id")
        api = self._api()
        if cid:
            try:
                with engine_call(f"stop container {record['name']}"):
                    # The engine counts whole seconds; never cut a grace short.
                    api.stop(cid, timeout=max(0, math.ceil(grace)))
            except Exception as exc:
                if not is_not_found(exc):
                    raise
        record["exit_code"] = self._exit_code(record)
        self._remove_container(record)
        record["removed"] = True
        self._book.write(record)

    def _forget(self, instance_id: str) -> None:
        record = self._book.load(instance_id)
        if record is None:
            return
        if not record.get("removed"):
            state = self._container_state(record)
            if state is not None and state.get("Running"):
                raise DriverError(
                    f"{instance_id} is still running; it cannot be forgotten",
                    hint="Stop it first.",
                )
            self._remove_container(record)
        shutil.rmtree(self._book.dir(instance_id))

    def _remove_container(self, record: dict[str, Any]) -> None:
        """Copy its logs, then remove the container this record names (by id; by name only
        when the id was never recorded, and then only if its labels name this instance)."""
        cid = record.get("container_id") or self._created_unrecorded(record)
        if not cid:
            return
        self._sync_logs({**record, "container_id": cid})
        try:
            with engine_call(f"remove container {record['name']}"):
                self._api().remove_container(cid, force=True)
        except Exception as exc:
            if not is_not_found(exc):
                raise
        docker_secrets.remove(self._secrets_dir(str(record["instance_id"])))

    def _created_unrecorded(self, record: dict[str, Any]) -> str | None:
        """A container created from this record by a driver that died before writing its id:
        the record says this name was being created for this instance."""
        try:
            with engine_call(f"inspect container {record['name']}"):
                found = self._api().inspect_container(record["name"])
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        mine = found["Config"].get("Labels", {}).get(LABEL + "instance") == record["instance_id"]
        return str(found["Id"]) if mine and found.get("Image") == record["image_id"] else None

    # -- observing ----------------------------------------------------------------------------

    def _observe(self) -> list[ObservedInstance]:
        records = self._book.all()
        # logs of instances forgotten longer than max_age go (retention, corral.logs)
        self._log_sweeper.maybe({str(r["instance_id"]) for r in records})
        if not records:
            return []
        filters = label_filters(self.project, self.environment)
        with engine_call("list containers"):
            listed = {c["Id"]: c for c in self._api().containers(all=True, filters=filters)}
        seen = []
        for record in records:
            observed = self._observed(record, listed.get(record.get("container_id") or ""))
            if observed.state is not ObservedState.RUNNING and not record.get("removed"):
                detail = self._recreated(record, listed.values())
                observed = dataclasses.replace(observed, detail=detail) if detail else observed
            seen.append(observed)
        return seen

    # -- what the auditor and `status` ask (audit/docker.py) ------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """What corral launched, one record per instance of this project and environment."""
        return self._book.all()

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        """`docker inspect` of a container, or None when it no longer exists."""
        try:
            with engine_call(f"inspect container {container_id[:12]}"):
                found: dict[str, Any] = self._api().inspect_container(container_id)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        return found

    async def strangers(self) -> list[Stranger]:
        """Containers with this project's and environment's labels that no record names:
        reported, never touched."""
        return await asyncio.to_thread(self.find_strangers)

    def find_strangers(self) -> list[Stranger]:
        # listed before the records are read: a start that creates a container meanwhile has
        # recorded its name (then its id) before the engine could list it
        with engine_call("list containers"):
            listed = self._api().containers(
                all=True, filters=label_filters(self.project, self.environment)
            )
        records = self._book.all()
        owned = {str(r["container_id"]) for r in records if r.get("container_id")}
        creating = {str(r["name"]) for r in records if not r.get("container_id")}
        return find_strangers(listed, owned, creating)

    def recreated_evidence(self, record: dict[str, Any]) -> str | None:
        with engine_call("list containers"):
            listed = self._api().containers(
                all=True, filters=label_filters(self.project, self.environment)
            )
        return self._recreated(record, listed)

    def _recreated(self, record: dict[str, Any], listed: Any) -> str | None:
        """Evidence when the recorded container is gone and another one now holds its name or
        its instance label: someone recreated it outside corral (that one is a stranger)."""
        for container in listed:
            names = container.get("Names") or []
            claims = (container.get("Labels") or {}).get(LABEL + "instance")
            if f"/{record['name']}" not in names and claims != record["instance_id"]:
                continue
            if container["Id"] == record.get("container_id"):
                continue
            found = self.inspect(container["Id"])
            if found is None:
                continue
            key = home_key(self._home.root)
            evidence = "; ".join(f.render() for f in compare_container(record, found, key=key))
            return (
                f"recreated outside corral as container {container['Id'][:12]} (not the "
                f"recorded {str(record.get('container_id'))[:12]}, left alone as a stranger)"
                + (f": {evidence}" if evidence else "")
            )
        return None

    def _observed(
        self, record: dict[str, Any], container: dict[str, Any] | None
    ) -> ObservedInstance:
        running = container is not None and container.get("State") in ("running", "paused")
        address = None
        exit_code = record.get("exit_code")
        if container is not None:
            self._sync_logs(record, every=_LOG_EVERY)
            if running:
                address = _address(container.get("Ports") or [], int(record["port"]))
            elif container.get("State") == "exited":
                exit_code = self._exit_code(record)
        return ObservedInstance(
            instance_id=str(record["instance_id"]),
            service=str(record["service"]),
            serial=int(record["serial"]),
            release=int(record["release"]),
            state=ObservedState.RUNNING if running else ObservedState.EXITED,
            address=address,
            driver_ref=str(record.get("container_id") or ""),
            image_digest=str(record["image_digest"]),
            exit_code=None if running else exit_code,
            started_at=float(record["created_at"]),
        )

    def _container_state(self, record: dict[str, Any]) -> dict[str, Any] | None:
        cid = record.get("container_id")
        if not cid:
            return None
        try:
            with engine_call(f"inspect container {record['name']}"):
                state: dict[str, Any] = self._api().inspect_container(cid)["State"]
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        return state

    def _exit_code(self, record: dict[str, Any]) -> int | None:
        state = self._container_state(record)
        if state is None or state.get("Running") or state.get("Status") == "created":
            return record.get("exit_code")
        return int(state.get("ExitCode", 0))

    def _sync_logs(self, record: dict[str, Any], *, every: float = 0.0) -> None:
        """Append what the container logged since the last copy to the instance's log file,
        each line stamped with the engine's time and its stream (corral.logs.engine_copy).
        With `every`, at most that often per container (observe runs each tick; a stop or a
        failed start copies at once)."""
        cid = str(record["container_id"])
        now = time.monotonic()
        if every and now - self._logs_synced.get(cid, -every) < every:
            return
        self._logs_synced[cid] = now
        instance_id = str(record["instance_id"])
        path = self._book.log_file(str(record["service"]), instance_id)
        api = self._api()
        with engine_copy.copying(self._book.dir(instance_id) / engine_copy.LOCK_NAME) as mine:
            if not mine:
                return  # another process (the CLI's observe, the agent's) is copying them
            after = engine_copy.last_stamp(path)
            # inclusive, and a µs early against float rounding: newer_than drops what repeats
            since = {} if after is None else {"since": after / 1e9 - 1e-6}
            try:
                with engine_call(f"read the logs of {record['name']}"):
                    out: bytes = api.logs(cid, stdout=True, stderr=False, timestamps=True, **since)
                    err: bytes = api.logs(cid, stdout=False, stderr=True, timestamps=True, **since)
            except Exception as exc:
                if is_not_found(exc):
                    return
                raise
            data = engine_copy.newer_than(from_engine(out, err), after)
            if data:
                engine_copy.append(path, data, self.log_policy)

    # -- the engine ---------------------------------------------------------------------------

    def _api(self) -> Any:
        if self._client is None:
            self._client = connect()
        return self._client.api


def container_name(spec: LaunchSpec) -> str:
    """Unique per instance id, so a replacement never clashes with what it replaces."""
    return f"corral-{spec.project}-{spec.environment}-{spec.service}-{spec.instance_id}"


def _record(spec: LaunchSpec, image_id: str, name: str) -> dict[str, Any]:
    """Written before the container is created. Env *values* stay out (they may hold
    secrets, law 5); the names are enough to debug."""
    return {
        **launch_fields(spec),
        "image_id": image_id,
        "name": name,
        "command": spec.command,
        "env_names": sorted(spec.env),
        "secret_names": sorted(spec.secrets),  # names only: exec output is redacted by them
        "port": spec.port,
        "container_id": None,
        "created_at": time.time(),
    }


def _published(inspected: dict[str, Any]) -> list[dict[str, Any]]:
    """An inspected container's published ports in the list API's shape
    ({PrivatePort, IP, PublicPort})."""
    ports = inspected["NetworkSettings"]["Ports"] or {}
    found = []
    for key, bindings in ports.items():
        private = int(key.split("/")[0])
        for binding in bindings or []:
            found.append(
                {"PrivatePort": private, "IP": binding["HostIp"], "PublicPort": binding["HostPort"]}
            )
    return found


def _address(ports: list[dict[str, Any]], port: int) -> str | None:
    for entry in ports:
        if int(entry.get("PrivatePort", 0)) == port and entry.get("IP") == "127.0.0.1":
            return f"127.0.0.1:{int(entry['PublicPort'])}"
    return None
