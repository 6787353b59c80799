"""An in-process fake of the Kubernetes API endpoints the kubernetes driver uses.

No API server can run on this machine, so this is the one fake the driver is tested against:
a real HTTP server on 127.0.0.1 (a thread) that stores objects and serves get / list (with
equality label selectors) / create / merge-patch / delete for pods, secrets, claims, services,
ReplicaSets and Gateway API HTTPRoutes, and a pod's log (`timestamps`, `sinceTime`: each line
stamped with the time the fake read it from the container, as the kubelet does; a test adds
lines of its own with `append_log`), and exec over a websocket (`v4.channel.k8s.io`: the
command runs as a process with the pod's env, its output and final Status on channels 1-3).
A controller thread plays the ReplicaSet controller and the kubelet: it makes pods for a
ReplicaSet's replicas, deletes the lowest-ranked on scale-down (not ready first, then the
lowest `pod-deletion-cost`, then the newest, as the real one does), and runs each pod's
container as a real process: the pod's command, or the harness's default (a Python HTTP
server). Every pod shares 127.0.0.1, so the fake gives each its own
containerPort (and PORT) as if it had its own address. A container that exits is restarted
(restartCount, lastState), like the kubelet's restartPolicy Always.

What it does not do: watches, resourceVersion conflicts, admission, scheduling, probes
(a pod is ready once its port accepts), image pulls (the image is the harness's command).
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import http.server
import itertools
import json
import os
import secrets
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import wsproto
import wsproto.events
import wsproto.utilities

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
KINDS = {
    "pods": "Pod",
    "secrets": "Secret",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "services": "Service",
    "replicasets": "ReplicaSet",
    "httproutes": "HTTPRoute",
}
_TICK = 0.02


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _stamp_now() -> str:
    """RFC 3339 with nanoseconds, as the kubelet stamps log lines."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def _stamped(text: bytes) -> bytes:
    """`text` (whole lines) as the fake stores a log: each line prefixed with its stamp."""
    stamp = _stamp_now().encode()
    return b"".join(stamp + b" " + line + b"\n" for line in text.splitlines())


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
    """One run of a pod's container: a real process, its output stamped line by line into the
    pod's log by a reader thread (the kubelet's log, merged streams, as `kubectl logs`)."""

    def __init__(
        self, argv: list[str], env: dict[str, str], log: Path, cwd: Path, lock: threading.Lock
    ) -> None:
        self.log = log.open("ab")
        self._write = lock  # shared with append_log: lines never interleave mid-line
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
        self.started = _now()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._write:
                self.log.write(_stamped(line.rstrip(b"\n")))
                self.log.flush()

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
        self._reader.join(timeout=5)  # EOF once the process group is gone
        if self.proc.stdout is not None:
            self.proc.stdout.close()
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
        # plural → the status every request for it gets (403: forbidden; 404: no such
        # resource, as a cluster without that CRD answers)
        self.refused: dict[str, int] = {}
        self._execs: set[subprocess.Popen[bytes]] = set()  # exec commands still running
        self._deadlines: dict[str, float] = {}  # pod uid → when its deletion kills it
        self._retry: dict[str, float] = {}  # pod uid → when its exited container restarts
        self.lock = threading.RLock()
        self._log_write = threading.Lock()
        self._versions = itertools.count(1)
        self._stop = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _do(self) -> None:
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    fake.exec_ws(self)  # the one websocket endpoint: a pod's exec
                    self.close_connection = True
                    return
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
            for proc in list(self._execs):
                _kill_group(proc)

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

    def append_log(self, pod_name: str, text: str) -> None:
        """Lines in the pod's log as if its app had printed them now."""
        with self._log_write, (self.workdir / f"{pod_name}.log").open("ab") as log:
            log.write(_stamped(text.encode()))

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
        if plural in self.refused:
            code = self.refused[plural]
            reason = "NotFound" if code == 404 else "Forbidden"
            return self._status(
                code,
                reason,
                f"the server could not find the requested resource ({plural})"
                if code == 404
                else f"{plural} is forbidden",
            )
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
                return self._log(name, query)
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

    def _log(self, name: str, query: dict[str, list[str]]) -> tuple[int, Any, str]:
        """The stored lines at or after `sinceTime` (compared as times, to the nanosecond),
        with their stamps when `timestamps=true`."""
        path = self.workdir / f"{name}.log"
        if ("pods", name) not in self.objects or not path.exists():
            return self._status(404, "NotFound", f'pods "{name}" not found')
        since = (query.get("sinceTime") or [""])[0]
        keep_stamps = (query.get("timestamps") or ["false"])[0] == "true"
        with self._log_write:
            lines = path.read_bytes().splitlines()
        out = []
        for line in lines:
            stamp, _, text = line.partition(b" ")
            if since and _nanos(stamp.decode()) < _nanos(since):
                continue
            out.append((line if keep_stamps else text) + b"\n")
        return 200, b"".join(out), "text/plain"

    # -- exec ---------------------------------------------------------------------------------

    def exec_ws(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        """GET …/pods/NAME/exec?command=…: run the command with the pod's env while the client
        stays; stdout on channel 1, stderr on 2, then the Status on 3, then close."""
        url = urllib.parse.urlsplit(handler.path)
        self.requests.append(("GET", url.path))
        query = urllib.parse.parse_qs(url.query)
        name = url.path.rstrip("/").split("/")[-2]
        sock = handler.connection
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        head = f"GET {handler.path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in handler.headers.items()
        )
        ws.receive_data((head + "\r\n").encode())
        asked = next(e for e in ws.events() if isinstance(e, wsproto.events.Request))
        protocol = "v4.channel.k8s.io"
        if protocol not in asked.subprotocols:
            sock.sendall(ws.send(wsproto.events.RejectConnection(status_code=400)))
            return
        sock.sendall(ws.send(wsproto.events.AcceptConnection(subprotocol=protocol)))
        with self.lock:
            pod = self.objects.get(("pods", name))
            env = self._env(pod) if pod is not None else None
        status = self._run_exec(sock, ws, query.get("command") or [], env)
        if status is not None:
            sock.sendall(
                ws.send(wsproto.events.Message(data=b"\x03" + json.dumps(status).encode()))
            )
            with contextlib.suppress(OSError, wsproto.utilities.LocalProtocolError):
                sock.sendall(ws.send(wsproto.events.CloseConnection(code=1000)))

    def _run_exec(
        self, sock: socket.socket, ws: Any, argv: list[str], env: dict[str, str] | None
    ) -> dict[str, Any] | None:
        """The command's Status (None when the client left first: it was killed)."""
        if env is None:
            return {"status": "Failure", "reason": "NotFound", "message": "pod not found"}
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=self.workdir,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            message = f'exec: "{argv[0] if argv else ""}": {exc.strerror}'
            return {"status": "Failure", "reason": "InternalError", "message": message}
        self._execs.add(proc)
        send = threading.Lock()

        def pump(stream: Any, channel: bytes) -> None:
            for chunk in iter(lambda: stream.read1(4096), b""):
                with send, contextlib.suppress(OSError):
                    sock.sendall(ws.send(wsproto.events.Message(data=channel + chunk)))

        pumps = [
            threading.Thread(target=pump, args=(proc.stdout, b"\x01"), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, b"\x02"), daemon=True),
        ]
        for thread in pumps:
            thread.start()
        left = False
        while proc.poll() is None and not left:
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:  # the client closed (a timeout): end the command, as a runtime may
                left = True
        if left:
            _kill_group(proc)
        proc.wait()
        for thread in pumps:
            thread.join(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        self._execs.discard(proc)
        if left:
            return None
        code = proc.returncode
        if code == 0:
            return {"status": "Success", "metadata": {}}
        return {
            "status": "Failure",
            "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }

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
        env = self._env(pod)
        argv = (
            list(spec.get("command") or []) + list(spec.get("args") or []) or self.default_command
        )
        log = self.workdir / f"{pod['metadata']['name']}.log"
        return _Container(argv, env, log, self.workdir, self._log_write)

    def _env(self, pod: dict[str, Any]) -> dict[str, str]:
        """The app container's env, as the kubelet would make it (secrets resolved)."""
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
        return env


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _nanos(stamp: str) -> int:
    """An RFC 3339 UTC stamp (any fraction) as nanoseconds since the epoch."""
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    whole = calendar.timegm(time.strptime(seconds, "%Y-%m-%dT%H:%M:%S"))
    return whole * 10**9 + int(fraction.ljust(9, "0")[:9] or 0)


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
