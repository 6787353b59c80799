"""Kubernetes objects for a release, as plain dicts: pure, no I/O, deterministic.

The driver creates them through the API and `corral export kubernetes` writes them as YAML,
from the same functions, so what a user reviews is what the driver would make.

- one **ReplicaSet** per release (per release and serial when the service has `per_instance`
  volumes: a ReplicaSet's pods share one template, so each serial's claims need their own);
  corral sets its `replicas`, the cluster places, restarts and schedules the pods;
- one **Secret** per secret name and version (immutable), referenced by the pods: mounted as
  files under /run/secrets (mode 0400) or as env through `secretKeyRef`;
- one **PersistentVolumeClaim** per volume (per volume and serial for `per_instance`), never
  deleted by corral (law 4);
- for traffic from outside the cluster: a **Service** per release and a Gateway API
  **HTTPRoute** with one weighted backend per release.

Every object carries the labels every corral object carries (`io.corral.project`,
`environment`, `service`, `release`); pods get `io.corral.instance` and `io.corral.serial` when
the driver claims them. The image is referenced by digest in `image_registry`, where the user
pushed it (`skopeo copy oci:… docker://…`): a tag could move, a digest cannot (law 2).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LABEL = "io.corral."
IMAGE_ANNOTATION = LABEL + "image"
TEMPLATE_ANNOTATION = LABEL + "template-hash"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
SECRETS_DIR = "/run/secrets"
CONTAINER = "app"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class ClusterSettings:
    """The `kubernetes:` settings the objects depend on."""

    namespace: str = "default"
    image_registry: str | None = None  # e.g. registry.example.com/team; images by digest in it
    gateway: str = "corral"  # the Gateway an HTTPRoute attaches to
    storage_class: str | None = None  # None: the cluster's default class
    volume_size: str = "1Gi"

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ClusterSettings:
        known = {k: v for k, v in settings.items() if k in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in known.items() if v is not None})


@dataclass(frozen=True)
class ReleaseSource:
    """One release as the objects need it: its canonical config holds references and versions
    of secrets, never their values (law 5)."""

    project: str
    environment: str
    service: str
    release: int
    image_digest: str
    config: Mapping[str, Any]
    serial: int | None = None  # set when the service has per_instance volumes

    @property
    def per_serial(self) -> bool:
        return any(m.get("per_instance") for m in self.config.get("mounts") or [])


def dns_name(*parts: object) -> str:
    """A DNS-1035 label (≤ 63, lowercase, starts with a letter), unique for its parts: too long
    a name keeps its start and gets a hash of the whole."""
    raw = "-".join(str(p) for p in parts)
    name = _NOT_DNS.sub("-", raw.lower()).strip("-")
    if not name[:1].isalpha():
        name = "c-" + name
    if len(name) > 63 or name != raw:  # changed or cut: a hash keeps distinct parts distinct
        name = name[:54].rstrip("-") + "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return name


def environment_labels(project: str, environment: str) -> dict[str, str]:
    return {LABEL + "project": project, LABEL + "environment": environment}


def release_labels(src: ReleaseSource) -> dict[str, str]:
    """The ReplicaSet's selector: what its pods carry from the start."""
    labels = {
        **environment_labels(src.project, src.environment),
        LABEL + "service": src.service,
        LABEL + "release": f"r{src.release}",
    }
    if src.serial is not None:
        labels[LABEL + "serial-group"] = str(src.serial)
    return labels


def replica_set_name(src: ReleaseSource) -> str:
    tail = [] if src.serial is None else [f"s{src.serial}"]
    return dns_name(src.project, src.environment, src.service, f"r{src.release}", *tail)


def image_ref(settings: ClusterSettings, project: str, digest: str) -> str:
    registry = (settings.image_registry or "REGISTRY").rstrip("/")
    return f"{registry}/{project}@{digest}"


def secret_name(src: ReleaseSource, name: str) -> str:
    """One Secret per name and version: a new version is a new object, never an edit."""
    entry = (src.config.get("secrets") or {}).get(name) or {}
    version = entry.get("version")
    # secrets from env/file have no store version: their keyed digest names the value
    tag = f"v{version}" if version is not None else str(entry.get("digest", "x"))[-12:]
    return dns_name(src.project, src.environment, "secret", name, tag)


def secret(src: ReleaseSource, name: str, value: str) -> dict[str, Any]:
    """The Secret holding one value (the driver only: export never writes values)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(src, name),
            "labels": {**environment_labels(src.project, src.environment), LABEL + "secret": name},
        },
        "type": "Opaque",
        "immutable": True,
        "stringData": {name: value},
    }


def claim_name(project: str, environment: str, volume: str, serial: int | None) -> str:
    tail = [] if serial is None else [str(serial)]
    return dns_name(project, environment, "vol", volume, *tail)


def claims(src: ReleaseSource, settings: ClusterSettings) -> list[dict[str, Any]]:
    """The PersistentVolumeClaims a release's pods mount (created if absent, never deleted)."""
    found = []
    for mount in src.config.get("mounts") or []:
        serial = src.serial if mount.get("per_instance") else None
        spec: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": settings.volume_size}},
        }
        if settings.storage_class:
            spec["storageClassName"] = settings.storage_class
        labels = {
            **environment_labels(src.project, src.environment),
            LABEL + "volume": mount["name"],
        }
        if serial is not None:
            labels[LABEL + "serial"] = str(serial)
        found.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": claim_name(src.project, src.environment, mount["name"], serial),
                    "labels": labels,
                },
                "spec": spec,
            }
        )
    return found


def readiness_probe(health: Mapping[str, Any]) -> dict[str, Any] | None:
    """The kubelet's readiness probe mirroring corral's own check, so Kubernetes (a Service's
    endpoints) and corral (its router) agree on which pod is ready. Kubernetes counts any
    200-399 as an http success, corral the exact status: corral's check stays the judge."""
    if health.get("exec"):
        kind: dict[str, Any] = {"exec": {"command": list(health["exec"])}}
    elif health.get("tcp"):
        kind = {"tcpSocket": {"port": "http"}}
    else:
        kind = {"httpGet": {"path": (health.get("http") or {}).get("path", "/"), "port": "http"}}
    return {
        **kind,
        "periodSeconds": max(1, math.ceil(float(health.get("interval", 1.0)))),
        "timeoutSeconds": max(1, math.ceil(float(health.get("timeout", 1.0)))),
        "successThreshold": int(health.get("healthy_threshold", 1)),
        "failureThreshold": int(health.get("failure_threshold", 3)),
    }


def _env(src: ReleaseSource) -> list[dict[str, Any]]:
    cfg = src.config
    port = int(cfg.get("port", 8080))
    plain = {str(k): str(v) for k, v in (cfg.get("env") or {}).items()}
    # corral's own variables win, as on the other drivers. The instance id is not known when
    # the pod is made (the driver claims a pod once the ReplicaSet made it): it is in the
    # pod's labels, which /etc/corral/labels shows (a downward API file, kept up to date).
    plain.update(
        {
            "PORT": str(port),
            "SCRATCH": "/scratch",
            "CORRAL_SERVICE": src.service,
            "CORRAL_RELEASE": f"r{src.release}",
        }
    )
    if src.serial is not None:
        plain["CORRAL_SERIAL"] = str(src.serial)
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(plain.items())]
    env.append({"name": "CORRAL_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    for name, entry in sorted((cfg.get("secrets") or {}).items()):
        if entry.get("as") == "env":
            ref = {"name": secret_name(src, name), "key": name}
            env.append({"name": name, "valueFrom": {"secretKeyRef": ref}})
    return env


def _volumes(src: ReleaseSource) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts): private /tmp and /scratch (the root is read-only), the
    labels file, secrets as files, claims."""
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}},
        {
            "name": "corral-pod",
            "downwardAPI": {
                "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]
            },
        },
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "corral-pod", "mountPath": "/etc/corral", "readOnly": True},
    ]
    files = sorted(n for n, e in (src.config.get("secrets") or {}).items() if e.get("as") != "env")
    if files:
        sources = [
            {"secret": {"name": secret_name(src, n), "items": [{"key": n, "path": n}]}}
            for n in files
        ]
        volumes.append({"name": "secrets", "projected": {"sources": sources, "defaultMode": 0o400}})
        mounts.append({"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True})
    for i, mount in enumerate(src.config.get("mounts") or []):
        serial = src.serial if mount.get("per_instance") else None
        claim = claim_name(src.project, src.environment, mount["name"], serial)
        volumes.append({"name": f"vol-{i}", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": f"vol-{i}", "mountPath": mount["path"]})
    return volumes, mounts


def _pod_security(image_user: str | None) -> dict[str, Any]:
    """Non-root when the image names a numeric non-zero user: the kubelet can only check a
    numeric one, and refuses to start a pod whose named user it cannot check."""
    context: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    uid = (image_user or "").split(":", 1)[0]
    if uid.isdigit() and int(uid) != 0:
        context.update(runAsNonRoot=True, runAsUser=int(uid))
    return context


def pod_template(
    src: ReleaseSource, settings: ClusterSettings, image_user: str | None = None
) -> dict[str, Any]:
    cfg = src.config
    volumes, mounts = _volumes(src)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image_ref(settings, src.project, src.image_digest),
        "imagePullPolicy": "IfNotPresent",
        "env": _env(src),
        "ports": [{"name": "http", "containerPort": int(cfg.get("port", 8080))}],
        "securityContext": {
            "readOnlyRootFilesystem": True,  # law 1
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    if cfg.get("command") is not None:
        container["args"] = list(cfg["command"])  # like the other drivers: the image's cmd
    probe = readiness_probe(cfg.get("health") or {})
    if probe is not None:
        container["readinessProbe"] = probe
    return {
        "metadata": {
            "labels": release_labels(src),
            "annotations": {IMAGE_ANNOTATION: src.image_digest},
        },
        "spec": {
            "automountServiceAccountToken": False,  # the app has no business with the API
            "enableServiceLinks": False,
            "securityContext": _pod_security(image_user),
            "containers": [container],
            "volumes": volumes,
        },
    }


def template_hash(template: Mapping[str, Any]) -> str:
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def replica_set(
    src: ReleaseSource, settings: ClusterSettings, replicas: int, image_user: str | None = None
) -> dict[str, Any]:
    template = pod_template(src, settings, image_user)
    labels = release_labels(src)
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": replica_set_name(src),
            "labels": labels,
            # its template never changes (law 1): a differing hash means someone edited it
            "annotations": {
                IMAGE_ANNOTATION: src.image_digest,
                TEMPLATE_ANNOTATION: template_hash(template),
            },
        },
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template},
    }


def service(src: ReleaseSource) -> dict[str, Any]:
    """A ClusterIP Service selecting the release's ready pods: an HTTPRoute's backend."""
    labels = release_labels(src)
    port = int(src.config.get("port", 8080))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": replica_set_name(src), "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def http_route(
    project: str,
    environment: str,
    service_name: str,
    backends: list[tuple[ReleaseSource, int]],
    settings: ClusterSettings,
) -> dict[str, Any]:
    """One rule, one weighted backendRef per release (weights as corral's router has them)."""
    refs = [
        {
            "name": replica_set_name(src),
            "port": int(src.config.get("port", 8080)),
            "weight": weight,
        }
        for src, weight in backends
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": dns_name(project, environment, service_name),
            "labels": {**environment_labels(project, environment), LABEL + "service": service_name},
        },
        "spec": {
            "parentRefs": [{"name": settings.gateway}],
            "rules": [{"backendRefs": refs}],
        },
    }
