"""`corral export kubernetes`: the objects of a release, validated against the official
Kubernetes OpenAPI schemas (the `kubernetes-validate` package ships them) for two versions.

HTTPRoute is a CRD (Gateway API), not in those schemas: it is validated against the Gateway
API's own schema of HTTPRoute v1 (vendored data, tests/conformance/data/README.md).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from ruamel.yaml import YAML

from corral.drivers.kubernetes_export import release_manifests, render
from corral.drivers.kubernetes_manifests import ClusterSettings, ReleaseSource
from tests.conformance.gateway_schema import problems

kubernetes_validate = pytest.importorskip("kubernetes_validate")

VERSIONS = ["1.29.0", "1.31.0"]
SETTINGS = ClusterSettings(namespace="shop", image_registry="registry.example.com/team")
DIGEST = "sha256:" + "ab" * 32


def config(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "v": 1,
        "command": ["/usr/bin/python3", "/app/server.py"],
        "env": {"GREETING": "hello"},
        "port": 8080,
        "health": {
            "http": {"path": "/healthz", "status": 200},
            "interval": 0.2,
            "timeout": 2.0,
            "healthy_threshold": 1,
            "start_timeout": 30.0,
        },
        "mounts": [{"name": "uploads", "path": "/data", "per_instance": False}],
        "secrets": {
            "API_TOKEN": {
                "from": "store",
                "key": "API_TOKEN",
                "as": "env",
                "version": 3,
                "digest": "x",
            },
            "DB_PASSWORD": {
                "from": "store",
                "key": "DB",
                "as": "file",
                "version": 1,
                "digest": "y",
            },
        },
    }
    base.update(changes)
    return base


def source(release: int = 4, **changes: Any) -> ReleaseSource:
    return ReleaseSource("shop", "prod", "web", release, DIGEST, config(**changes))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_every_object_but_the_route_is_valid_for_two_kubernetes_versions() -> None:
    docs = release_manifests(source(), SETTINGS, replicas=3, routed=True, image_user="1000")
    per_serial = release_manifests(
        source(mounts=[{"name": "db", "path": "/var/db", "per_instance": True}]),
        SETTINGS,
        replicas=2,
        routed=False,
    )
    kinds = sorted(d["kind"] for d in docs + per_serial)
    assert kinds == [
        "HTTPRoute",
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
        "ReplicaSet",
        "ReplicaSet",
        "ReplicaSet",
        "Service",
    ]
    for version in VERSIONS:
        for doc in docs + per_serial:
            if doc["kind"] != "HTTPRoute":
                kubernetes_validate.validate(doc, version, strict=True)  # raises when invalid


def test_an_invalid_object_is_caught_by_the_validation() -> None:
    """The validation can fail: a ReplicaSet with a string replica count does."""
    rs = by_kind(release_manifests(source(), SETTINGS, replicas=1, routed=False), "ReplicaSet")[0]
    rs["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(rs, VERSIONS[0], strict=True)


def test_http_route_has_the_gateway_api_v1_shape_with_one_weighted_backend_per_release() -> None:
    old, new = source(release=4), source(release=5, env={"GREETING": "hi"})
    docs = release_manifests(new, SETTINGS, replicas=3, routed=True, weights=[(old, 90), (new, 10)])
    route = by_kind(docs, "HTTPRoute")[0]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["name"] == "shop-prod-web"
    assert route["spec"]["parentRefs"] == [{"name": "corral"}]
    (rule,) = route["spec"]["rules"]
    assert rule["backendRefs"] == [
        {"name": "shop-prod-web-r4", "port": 8080, "weight": 90},
        {"name": "shop-prod-web-r5", "port": 8080, "weight": 10},
    ]
    # the Gateway API's schema accepts the route as export writes it (YAML), and would not
    # accept a weight out of its range
    written = [d for d in YAML(typ="safe").load_all(render(new, docs, True)) if d]
    assert problems(by_kind(written, "HTTPRoute")[0]) == []
    rule["backendRefs"][0]["weight"] = 1_000_001
    assert problems(route) == [
        "spec/rules/0/backendRefs/0/weight: 1000001 is greater than the maximum of 1000000"
    ]
    # each backend is the Service of its release, which selects that release's pods
    service = by_kind(docs, "Service")[0]
    assert service["metadata"]["name"] == "shop-prod-web-r5"
    assert service["spec"]["selector"]["io.corral.release"] == "r5"


def test_pods_are_locked_down_and_ready_by_corrals_own_check() -> None:
    rs = by_kind(release_manifests(source(), SETTINGS, replicas=2, routed=False), "ReplicaSet")[0]
    pod = rs["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    assert app["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert app["image"] == f"registry.example.com/team/shop@{DIGEST}"  # by digest (law 2)
    assert app["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {m["mountPath"] for m in app["volumeMounts"]} >= {"/tmp", "/scratch", "/data"}
    assert pod["automountServiceAccountToken"] is False
    assert "runAsNonRoot" not in pod["securityContext"]  # the image names no user
    for labels in (rs["metadata"]["labels"], rs["spec"]["template"]["metadata"]["labels"]):
        assert labels == {
            "io.corral.project": "shop",
            "io.corral.environment": "prod",
            "io.corral.service": "web",
            "io.corral.release": "r4",
        }

    tcp = source(health={**config()["health"], "tcp": True})
    rs = by_kind(
        release_manifests(tcp, SETTINGS, replicas=1, routed=False, image_user="1000:1000"),
        "ReplicaSet",
    )[0]
    probe = rs["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["tcpSocket"] == {"port": "http"} and "httpGet" not in probe
    assert rs["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert rs["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 1000


def test_secrets_are_referenced_by_name_and_version_never_written() -> None:
    src = source()
    docs = release_manifests(src, SETTINGS, replicas=2, routed=True)
    text = render(src, docs, recorded=True)
    assert "kind: Secret" not in text and "stringData" not in text
    pod = by_kind(docs, "ReplicaSet")[0]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "shop-prod-secret-api-token-v3-"
        + env["API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"][-8:],
        "key": "API_TOKEN",
    }
    files = next(v for v in pod["volumes"] if v["name"] == "secrets")["projected"]
    assert files["defaultMode"] == 0o400
    assert [s["secret"]["items"] for s in files["sources"]] == [
        [{"key": "DB_PASSWORD", "path": "DB_PASSWORD"}]
    ]
    assert "kubectl create secret generic shop-prod-secret-db-password-v1" in text


def test_per_instance_volumes_give_one_replica_set_and_claim_per_serial() -> None:
    src = source(mounts=[{"name": "db", "path": "/var/db", "per_instance": True}])
    docs = release_manifests(src, SETTINGS, replicas=2, routed=False)
    sets = by_kind(docs, "ReplicaSet")
    assert [d["metadata"]["name"] for d in sets] == ["shop-prod-web-r4-s0", "shop-prod-web-r4-s1"]
    assert [d["spec"]["replicas"] for d in sets] == [1, 1]
    claims = [d["metadata"]["name"] for d in by_kind(docs, "PersistentVolumeClaim")]
    assert claims == ["shop-prod-vol-db-0", "shop-prod-vol-db-1"]
    mounted = [
        v["persistentVolumeClaim"]["claimName"]
        for d in sets
        for v in d["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert mounted == claims


def test_the_output_is_deterministic_and_parses_as_yaml() -> None:
    src = source()
    shuffled = ReleaseSource(
        "shop", "prod", "web", 4, DIGEST, json.loads(json.dumps(config(), sort_keys=True))
    )
    first = render(src, release_manifests(src, SETTINGS, replicas=2, routed=True), recorded=True)
    again = render(
        shuffled, release_manifests(shuffled, SETTINGS, replicas=2, routed=True), recorded=True
    )
    assert first == again
    parsed = list(YAML(typ="safe").load_all(first))
    assert [d["kind"] for d in parsed] == [
        "PersistentVolumeClaim",
        "ReplicaSet",
        "Service",
        "HTTPRoute",
    ]
    assert "&id" not in first  # no YAML aliases: every object reads on its own
