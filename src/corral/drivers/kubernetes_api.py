"""The few Kubernetes API calls the driver makes, on plain dicts, through `lightkube`.

lightkube is an optional dependency (`pip install 'corral[kubernetes]'`), imported when a
driver is built; its errors are translated here into DriverError, so nothing above this
module knows the client library.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from corral.errors import DriverError, PrerequisiteError

CLIENT_MISSING = (
    "the kubernetes driver needs the lightkube client: pip install 'corral[kubernetes]'"
)
FIELD_MANAGER = "corral"


def client_library() -> ModuleType:
    """The `lightkube` package, or PrerequisiteError (exit 2) naming the extra to install."""
    try:
        return importlib.import_module("lightkube")
    except ImportError as exc:
        raise PrerequisiteError(CLIENT_MISSING, hint="Or set `driver: local`.") from exc


def _kinds() -> dict[str, Any]:
    core = importlib.import_module("lightkube.resources.core_v1")
    apps = importlib.import_module("lightkube.resources.apps_v1")
    generic = importlib.import_module("lightkube.generic_resource")
    return {
        "Pod": core.Pod,
        "Secret": core.Secret,
        "PersistentVolumeClaim": core.PersistentVolumeClaim,
        "Service": core.Service,
        "ReplicaSet": apps.ReplicaSet,
        # a CRD lightkube has no model of; registering it also lets codecs.from_dict read one
        "HTTPRoute": generic.create_namespaced_resource(
            "gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"
        ),
    }


class Cluster:
    """One namespace of one cluster, as the kubeconfig (file, context) names it."""

    def __init__(self, namespace: str, kubeconfig: str | None, context: str | None) -> None:
        self._lib = client_library()
        self.namespace = namespace
        self._kubeconfig = kubeconfig
        self._context = context
        self._client: Any = None  # connected on first use: building a driver needs no cluster
        self._kinds = _kinds()

    def _api(self) -> Any:
        if self._client is None:
            path = self._kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            path = str(Path(path).expanduser())
            try:
                config = self._lib.KubeConfig.from_file(path)
                single = config.get(context_name=self._context)
            except Exception as exc:  # lightkube raises several kinds for a bad kubeconfig
                raise DriverError(
                    f"cannot use the kubeconfig {path}"
                    + (f" (context {self._context})" if self._context else "")
                    + f": {exc}",
                    hint="Set `kubernetes.kubeconfig` / `kubernetes.context` in corral.yaml, "
                    "or KUBECONFIG.",
                ) from exc
            self._client = self._lib.AsyncClient(
                single, namespace=self.namespace, field_manager=FIELD_MANAGER, trust_env=False
            )
        return self._client

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._lib.ApiError as exc:
            raise DriverError(
                f"the Kubernetes API refused to {what}: {exc.status.message} "
                f"({exc.status.code} {exc.status.reason})",
                hint="Check the namespace and what corral's account may do there "
                "(`kubectl auth can-i --list -n NAMESPACE`).",
            ) from exc
        except OSError as exc:  # connection refused, DNS, TLS …
            raise DriverError(f"cannot reach the Kubernetes API to {what}: {exc}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("httpx"):
                raise DriverError(f"cannot reach the Kubernetes API to {what}: {exc}") from exc
            raise

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            with self._call(f"read {kind} {name}"):
                found = await self._api().get(self._kinds[kind], name, namespace=self.namespace)
        except DriverError as exc:
            if api_status(exc) == 404:
                return None
            raise
        return _plain(found)

    async def list(self, kind: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        with self._call(f"list {kind}s"):
            return [
                _plain(item)
                async for item in self._api().list(
                    self._kinds[kind], namespace=self.namespace, labels=labels
                )
            ]

    async def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create `obj`; None when an object of that name already exists."""
        resource = importlib.import_module("lightkube.codecs").from_dict(obj)
        try:
            with self._call(f"create {obj['kind']} {obj['metadata']['name']}"):
                made = await self._api().create(resource, namespace=self.namespace)
        except DriverError as exc:
            if api_status(exc) == 409:
                return None
            raise
        return _plain(made)

    async def merge_patch(self, kind: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        types = importlib.import_module("lightkube.types")
        with self._call(f"patch {kind} {name}"):
            done = await self._api().patch(
                self._kinds[kind],
                name,
                patch,
                namespace=self.namespace,
                patch_type=types.PatchType.MERGE,
            )
        return _plain(done)

    async def merge_patch_if_there(
        self, kind: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        """`merge_patch`, or None when the object is gone (a pod deleted meanwhile)."""
        try:
            return await self.merge_patch(kind, name, patch)
        except DriverError as exc:
            if api_status(exc) == 404:
                return None
            raise

    async def delete(self, kind: str, name: str, *, grace: int | None = None) -> None:
        try:
            with self._call(f"delete {kind} {name}"):
                await self._api().delete(
                    self._kinds[kind], name, namespace=self.namespace, grace_period=grace
                )
        except DriverError as exc:
            if api_status(exc) != 404:
                raise

    async def log(self, pod: str, since_time: str | None = None) -> str:
        """The pod's app container's log, each line stamped by the kubelet (RFC 3339, UTC),
        from `since_time` on (inclusive) or from its start ('' when the pod or its log is
        gone). lightkube's own `log` only takes sinceSeconds, which the two clocks would skew,
        so the request is made with its generic client, as its `log` makes it."""
        params = {"container": "app", "timestamps": "true", "sinceTime": since_time}
        core = importlib.import_module("lightkube.resources.core_v1")
        try:
            with self._call(f"read the log of pod {pod}"):
                generic = self._api()._client
                request = generic.prepare_request(
                    "get",
                    core.PodLog,
                    name=pod,
                    namespace=self.namespace,
                    params={k: v for k, v in params.items() if v is not None},
                )
                response = await generic.send(generic.build_adapter_request(request))
                generic.raise_for_status(response)
                text: str = response.text
        except DriverError:
            return ""
        return text

    def http(self) -> Any:
        """lightkube's own HTTP client (httpx, with the cluster's server, TLS and credentials),
        for the calls lightkube has no method for (exec's websocket)."""
        return self._api()._client._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _plain(resource: Any) -> dict[str, Any]:
    data: dict[str, Any] = resource.to_dict()
    return data


def api_status(exc: DriverError) -> int | None:
    """The HTTP status of the API's refusal behind `exc` (None: it was not one)."""
    cause = exc.__cause__
    status = getattr(cause, "status", None)
    code = getattr(status, "code", None)
    return int(code) if code is not None else None
