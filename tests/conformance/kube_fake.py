"""An in-process fake of the Kubernetes API endpoints the kubernetes driver uses.

No API server can run on this machine, so this is the one fake the driver is tested against:
a real HTTP server on 127.0.0.1 (a thread) that stores objects and serves get / list (with
equality label selectors) / create / merge-patch / delete for pods, secrets, claims, services
and ReplicaSets, and a pod's log. A controller thread plays the ReplicaSet controller and the
kubelet: it makes pods for a ReplicaSet's replicas, deletes the lowest-ranked on scale-down
(not ready first, then the lowest `pod-deletion-cost`, then the newest, as the real one
does), and runs each pod's container as a real process: the pod's command, or the harness's
default (a Python HTTP server). Every pod shares 127.0.0.1, so the fake gives each its own
containerPort (and PORT) as if it had its own address. A container that exits is restarted
(restartCount, lastState), like the kubelet's restartPolicy Always.

What it does not do: watches, resourceVersion conflicts, admission, scheduling, probes
(a pod is ready once its port accepts), image pulls (the image is the harness's command).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
KINDS = {
    "pods": "Pod",
    "secrets": "Secret",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "services": "Service",
    "replicasets": "ReplicaSet",
}
_TICK = 0.02


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class _Container:
    """One run of a pod's container: a real process, its output in the pod's log."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
        self.started = _now()

    def exit_code(self) -> int | None:
        code = self.proc.poll()
        if code is None:
            return None
        return 128 - code if code < 0 else code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def reap(self) -> None:
        self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.log.close()


class FakeCluster:
    """Start with `start()`, stop with `close()` (kills every container it ran)."""

    def __init__(
        self, workdir: Path, default_command: list[str], namespace: str = "default"
    ) -> None:
        self.workdir = workdir
        self.default_command = default_command
        self.namespace = namespace
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # (plural, name) → object
        self.containers: dict[str, _Container] = {}  # pod uid → its current run
        self.requests: list[tuple[str, str]] = []  # (method, path): what the driver asked
        self._deadlines: dict[str, float] = {}  # pod uid → when its deletion kills it
        self._retry: dict[str, float] = {}  # pod uid → when its exited container restarts
        self.lock = threading.RLock()
        self._versions = itertools.count(1)
        self._stop = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _do(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                code, reply, ctype = fake.handle(self.command, self.path, body)
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _do

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._threads = [
            threading.Thread(target=self.server.serve_forever, daemon=True),
            threading.Thread(target=self._control_loop, daemon=True),
        ]

    def start(self) -> FakeCluster:
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        with self.lock:
            for container in self.containers.values():
                container.reap()
            self.containers.clear()

    def write_kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": self.namespace},
                }
            ],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    # -- what tests look at -------------------------------------------------------------------

    def list(self, plural: str, selector: str = "") -> list[dict[str, Any]]:
        with self.lock:
            return [
                json.loads(json.dumps(obj))
                for (kind, _), obj in sorted(self.objects.items())
                if kind == plural and matches(obj["metadata"].get("labels") or {}, selector)
            ]

    def crash(self, pod_name: str) -> None:
        """kill -9 of the pod's container (the kubelet then restarts it)."""
        with self.lock:
            pod = self.objects[("pods", pod_name)]
            self.containers[pod["metadata"]["uid"]].kill()

    # -- the API ------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, body: Any) -> tuple[int, Any, str]:
        url = urllib.parse.urlsplit(raw_path)
        query = urllib.parse.parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        self.requests.append((method, url.path))
        # /api/v1/namespaces/NS/PLURAL[/NAME[/log]] or /apis/G/V/namespaces/NS/PLURAL[/NAME]
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        if len(rest) < 3 or rest[0] != "namespaces" or rest[2] not in KINDS:
            return self._status(404, "NotFound", f"no such endpoint {url.path}")
        if rest[1] != self.namespace:
            return self._status(404, "NotFound", f"namespace {rest[1]} not found")
        plural, name = rest[2], rest[3] if len(rest) > 3 else None
        with self.lock:
            if name is None and method == "GET":
                selector = (query.get("labelSelector") or [""])[0]
                return (
                    200,
                    {
                        "kind": KINDS[plural] + "List",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(next(self._versions))},
                        "items": self.list(plural, selector),
                    },
                    "application/json",
                )
            if name is None and method == "POST":
                return self._create(plural, body)
            assert name is not None
            if len(rest) == 5 and rest[4] == "log" and plural == "pods":
                return self._log(name)
            found = self.objects.get((plural, name))
            if found is None:
                return self._status(404, "NotFound", f'{plural} "{name}" not found')
            if method == "GET":
                return 200, found, "application/json"
            if method == "PATCH":
                updated = merge_patch(found, body)
                updated["metadata"]["resourceVersion"] = str(next(self._versions))
                self.objects[(plural, name)] = updated
                return 200, updated, "application/json"
            if method == "DELETE":
                grace = (body or {}).get("gracePeriodSeconds")
                if grace is None and "gracePeriodSeconds" in query:
                    grace = int(query["gracePeriodSeconds"][0])
                self._delete(plural, name, grace)
                return 200, self._status(200, "", "deleted")[1], "application/json"
        return self._status(405, "MethodNotAllowed", method)

    def _status(self, code: int, reason: str, message: str) -> tuple[int, dict[str, Any], str]:
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success" if code < 400 else "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        return code, status, "application/json"

    def _create(self, plural: str, obj: dict[str, Any]) -> tuple[int, Any, str]:
        name = obj["metadata"]["name"]
        if (plural, name) in self.objects:
            return self._status(409, "AlreadyExists", f'{plural} "{name}" already exists')
        self._store(plural, obj)
        return 201, self.objects[(plural, name)], "application/json"

    def _store(self, plural: str, obj: dict[str, Any]) -> None:
        obj = json.loads(json.dumps(obj))
        meta = obj.setdefault("metadata", {})
        meta.update(
            namespace=self.namespace,
            uid=secrets.token_hex(8),
            creationTimestamp=_now(),
            resourceVersion=str(next(self._versions)),
        )
        if plural == "secrets" and "stringData" in obj:
            data = obj.pop("stringData")
            obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.objects[(plural, meta["name"])] = obj

    def _delete(self, plural: str, name: str, grace: int | None) -> None:
        obj = self.objects[(plural, name)]
        if plural != "pods":
            del self.objects[(plural, name)]
            if plural == "replicasets":  # cascade, as the garbage collector would
                for pod in self._owned(obj):
                    self._delete("pods", pod["metadata"]["name"], None)
            return
        meta = obj["metadata"]
        if grace is None:
            grace = int(obj["spec"].get("terminationGracePeriodSeconds", 30))
        deadline = time.time() + grace
        if meta.get("deletionTimestamp") and self._deadlines[meta["uid"]] <= deadline:
            return  # already going, sooner
        meta.update(deletionTimestamp=_now(), deletionGracePeriodSeconds=grace)
        self._deadlines[meta["uid"]] = deadline
        container = self.containers.get(meta["uid"])
        if container is not None:
            container.kill(signal.SIGTERM)

    def _log(self, name: str) -> tuple[int, Any, str]:
        path = self.workdir / f"{name}.log"
        if ("pods", name) not in self.objects or not path.exists():
            return self._status(404, "NotFound", f'pods "{name}" not found')
        return 200, path.read_bytes(), "text/plain"

    # -- the ReplicaSet controller and the kubelet --------------------------------------------

    def _control_loop(self) -> None:
        while not self._stop.wait(_TICK):
            with self.lock:
                for (plural, _), rs in list(self.objects.items()):
                    if plural == "replicasets":
                        self._reconcile(rs)
                for (plural, _), pod in list(self.objects.items()):
                    if plural == "pods":
                        self._kubelet(pod)

    def _owned(self, rs: dict[str, Any]) -> list[dict[str, Any]]:
        uid = rs["metadata"]["uid"]
        return [
            pod
            for (plural, _), pod in self.objects.items()
            if plural == "pods"
            and any(o.get("uid") == uid for o in pod["metadata"].get("ownerReferences") or [])
        ]

    def _reconcile(self, rs: dict[str, Any]) -> None:
        active = [p for p in self._owned(rs) if not p["metadata"].get("deletionTimestamp")]
        want = int(rs["spec"].get("replicas") or 0)
        for _ in range(want - len(active)):
            self._make_pod(rs)
        if len(active) > want:
            for pod in sorted(active, key=_deletion_rank)[: len(active) - want]:
                self._delete("pods", pod["metadata"]["name"], None)

    def _make_pod(self, rs: dict[str, Any]) -> None:
        template = json.loads(json.dumps(rs["spec"]["template"]))
        name = f"{rs['metadata']['name']}-{secrets.token_hex(3)[:5]}"
        port = free_port()
        for container in template["spec"]["containers"]:
            for entry in container.get("ports") or []:
                entry["containerPort"] = port  # its own "address" on the shared loopback
        meta = template["metadata"]
        meta["name"] = name
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "controller": True,
                "name": rs["metadata"]["name"],
                "uid": rs["metadata"]["uid"],
            }
        ]
        self._store(
            "pods", {"apiVersion": "v1", "kind": "Pod", **template, "status": {"phase": "Pending"}}
        )
        self.objects[("pods", name)]["spec"]["nodeName"] = "fake-node"

    def _kubelet(self, pod: dict[str, Any]) -> None:
        meta, status = pod["metadata"], pod.setdefault("status", {})
        uid = meta["uid"]
        container = self.containers.get(uid)
        app = (status.get("containerStatuses") or [{}])[0]
        if meta.get("deletionTimestamp"):
            ended = container is None or container.exit_code() is not None
            if ended or time.time() >= self._deadlines[uid]:
                if container is not None:
                    container.reap()
                    self.containers.pop(uid)
                self.objects.pop(("pods", meta["name"]), None)
            return
        restart = container is not None and container.exit_code() is not None
        if container is None or (restart and time.time() > self._retry.get(uid, 0)):
            if container is not None:  # it ended: restarted, as restartPolicy Always says
                code = container.exit_code()
                container.reap()
                app["lastState"] = {"terminated": {"exitCode": code, "finishedAt": _now()}}
                app["restartCount"] = int(app.get("restartCount", 0)) + 1
            container = self.containers[uid] = self._run(pod)
            app.update(name="app", ready=False, state={"running": {"startedAt": container.started}})
            app.setdefault("restartCount", 0)
            status.update(phase="Running", podIP="127.0.0.1", containerStatuses=[app])
            return
        code = container.exit_code()
        if code is not None and "terminated" not in app["state"]:
            app["state"] = {"terminated": {"exitCode": code, "finishedAt": _now()}}
            app["ready"] = False
            self._retry[uid] = time.time() + 0.5  # a short CrashLoopBackOff
        elif code is None and not app.get("ready") and _accepts(_pod_port(pod)):
            app["ready"] = True
            status["conditions"] = [{"type": "Ready", "status": "True"}]

    def _run(self, pod: dict[str, Any]) -> _Container:
        spec = pod["spec"]["containers"][0]
        env = {"PATH": "/usr/bin:/bin"}
        for entry in spec.get("env") or []:
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            elif "secretKeyRef" in entry.get("valueFrom", {}):
                ref = entry["valueFrom"]["secretKeyRef"]
                data = self.objects[("secrets", ref["name"])]["data"][ref["key"]]
                env[entry["name"]] = base64.b64decode(data).decode()
            elif "fieldRef" in entry.get("valueFrom", {}):
                env[entry["name"]] = pod["metadata"]["name"]
        env["PORT"] = str(_pod_port(pod))
        argv = (
            list(spec.get("command") or []) + list(spec.get("args") or []) or self.default_command
        )
        log = self.workdir / f"{pod['metadata']['name']}.log"
        return _Container(argv, env, log, self.workdir)


def _pod_port(pod: dict[str, Any]) -> int:
    return int(pod["spec"]["containers"][0]["ports"][0]["containerPort"])


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.05):
        return True
    return False


def _deletion_rank(pod: dict[str, Any]) -> tuple[int, int, int, str]:
    """Lower goes first, as the ReplicaSet controller ranks: not ready before ready, then
    the lower pod-deletion-cost, then the newer."""
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    ready = 1 if statuses[0].get("ready") else 0
    cost = int((pod["metadata"].get("annotations") or {}).get(DELETION_COST, "0"))
    created = pod["metadata"]["creationTimestamp"]
    newer_first = -int(time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")))
    return (ready, cost, newer_first, pod["metadata"]["name"])
