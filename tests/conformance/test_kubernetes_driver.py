"""What only the kubernetes driver does, against the fake API server (kube_fake.py): no API
server can run on this machine. Its pods are real processes serving HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.drivers.kubernetes_manifests import DELETION_COST
from corral.drivers.protocol import Mount, ObservedState
from corral.drivers.registry import create_driver
from corral.errors import DriverError, PrerequisiteError
from tests.conformance.driver_fixtures import http_get

pytest.importorskip("lightkube")

from tests.conformance.kube_harness import REGISTRY, KubeHarness  # fixture `kube`: conftest


def pods_of(kube: KubeHarness, instance: str = "") -> list[dict]:
    selector = f"io.corral.instance={instance}" if instance else "io.corral.project=proj"
    return kube.cluster.list("pods", selector)


def _ready(pod: dict) -> bool:
    return bool((pod.get("status", {}).get("containerStatuses") or [{}])[0].get("ready"))


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for the fake's controller to get there."""
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the fake cluster never got there")


async def test_a_release_is_one_replica_set_whose_replicas_corral_sets(kube: KubeHarness) -> None:
    driver = kube.driver()
    started = [await driver.start(kube.spec(f"web-{n}", serial=n, release=2)) for n in (1, 2, 3)]

    (rs,) = kube.cluster.list("replicasets")
    assert rs["metadata"]["name"] == "proj-test-web-r2"
    assert rs["spec"]["replicas"] == 3
    assert rs["metadata"]["labels"] == {
        "io.corral.project": "proj",
        "io.corral.environment": "test",
        "io.corral.service": "web",
        "io.corral.release": "r2",
    }
    container = rs["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{REGISTRY}/proj@{started[0].image_digest}"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # each claimed pod carries its instance id and serial; each serves at its address
    for n, seen in enumerate(started, start=1):
        (pod,) = pods_of(kube, f"web-{n}")
        assert pod["metadata"]["labels"]["io.corral.serial"] == str(n)
        assert seen.driver_ref == f"pod:{pod['metadata']['name']}"
        assert await http_get(seen.address or "", "/healthz") == "ok"


async def test_stop_retires_the_chosen_pod_and_scales_down_by_one(kube: KubeHarness) -> None:
    driver = kube.driver()
    for n in (1, 2, 3):
        await driver.start(kube.spec(f"web-{n}", serial=n))
    keep = {i: pods_of(kube, i)[0]["metadata"]["uid"] for i in ("web-1", "web-3")}
    chosen = pods_of(kube, "web-2")[0]["metadata"]["name"]
    kube.cluster.requests.clear()

    await driver.stop("web-2", grace=5)

    assert pods_of(kube, "web-2") == []
    assert {i: pods_of(kube, i)[0]["metadata"]["uid"] for i in ("web-1", "web-3")} == keep
    assert kube.cluster.list("replicasets")[0]["spec"]["replicas"] == 2
    writes = [(m, p.rsplit("/", 2)[-2:]) for m, p in kube.cluster.requests if m != "GET"]
    # the pod is marked cheapest before the ReplicaSet shrinks, then deleted for certain
    assert writes[:3] == [
        ("PATCH", ["pods", chosen]),
        ("PATCH", ["replicasets", "proj-test-web-r1"]),
        ("DELETE", ["pods", chosen]),
    ]
    seen = {o.instance_id: o.state for o in await driver.observe()}
    assert seen == {
        "web-1": ObservedState.RUNNING,
        "web-2": ObservedState.EXITED,
        "web-3": ObservedState.RUNNING,
    }


async def test_the_fake_controller_honours_the_deletion_cost(kube: KubeHarness) -> None:
    """What the driver relies on, shown on the fake: scaled down, the cheapest pod goes."""
    driver = kube.driver()
    for n in (1, 2):
        await driver.start(kube.spec(f"web-{n}", serial=n))
    await until(lambda: all(_ready(p) for p in pods_of(kube)))  # readiness outranks cost
    (first,) = pods_of(kube, "web-1")
    kube.cluster.handle(
        "PATCH",
        f"/api/v1/namespaces/default/pods/{first['metadata']['name']}",
        {"metadata": {"annotations": {DELETION_COST: "-100"}}},
    )
    kube.cluster.handle(
        "PATCH",
        "/apis/apps/v1/namespaces/default/replicasets/proj-test-web-r1",
        {"spec": {"replicas": 1}},
    )
    await until(lambda: len(pods_of(kube)) == 1)
    seen = await driver.observe()
    assert {o.instance_id: o.state for o in seen}["web-1"] is ObservedState.EXITED
    assert {o.instance_id: o.state for o in seen}["web-2"] is ObservedState.RUNNING


async def test_secrets_become_versioned_secrets_and_volumes_claims_that_outlive_pods(
    kube: KubeHarness,
) -> None:
    driver = kube.driver()
    token, password = "tok-3f9a1c77", "pw-8812bd0e"
    config = {"secrets": {"API_TOKEN": {"version": 3}, "DB_PASSWORD": {"version": 1}}}
    spec = kube.spec(
        "web-1",
        secrets={"API_TOKEN": (token, "env"), "DB_PASSWORD": (password, "file")},
        mounts=[Mount("uploads", "/data"), Mount("db", "/var/db", serial=1)],
        config=config,
    )
    started = await driver.start(spec)

    secrets = {s["metadata"]["name"]: s for s in kube.cluster.list("secrets")}
    prefixes = ("proj-test-secret-api-token-v3-", "proj-test-secret-db-password-v1-")
    assert sorted(n[: len(p)] for n, p in zip(sorted(secrets), prefixes, strict=True)) == list(
        prefixes
    )
    assert len(secrets) == 2
    assert all(s["immutable"] is True for s in secrets.values())
    env = json.loads(await http_get(started.address or "", "/env"))
    assert env["API_TOKEN"] == token  # through secretKeyRef
    pod = kube.cluster.list("replicasets")[0]["spec"]["template"]["spec"]
    files = next(v for v in pod["volumes"] if v["name"] == "secrets")["projected"]
    assert files["defaultMode"] == 0o400
    # per_instance: this serial's own ReplicaSet and claim; the shared claim once
    assert kube.cluster.list("replicasets")[0]["metadata"]["name"] == "proj-test-web-r1-s1"
    claims = sorted(c["metadata"]["name"] for c in kube.cluster.list("persistentvolumeclaims"))
    assert claims == ["proj-test-vol-db-1", "proj-test-vol-uploads"]

    await driver.stop("web-1", grace=5)
    await driver.forget("web-1")
    assert len(kube.cluster.list("persistentvolumeclaims")) == 2  # law 4
    assert kube.cluster.list("replicasets") == []  # an idle ReplicaSet goes with its last record
    for path in kube.home.rglob("*"):  # law 5: no value in anything corral wrote
        if path.is_file() and not path.name.endswith(".log"):
            assert token not in path.read_text() and password not in path.read_text()


async def test_a_restarted_container_is_a_dead_instance_and_forget_removes_its_pod(
    kube: KubeHarness,
) -> None:
    driver = kube.driver()
    started = await driver.start(kube.spec("web-1"))
    kube.cluster.crash(started.driver_ref.removeprefix("pod:"))
    for _ in range(200):
        seen = (await driver.observe())[0]
        if seen.state is ObservedState.EXITED:
            break
        await asyncio.sleep(0.05)
    assert (seen.state, seen.exit_code) == (ObservedState.EXITED, 137)
    assert pods_of(kube, "web-1") != []  # the kubelet restarted it: corral replaces, not repairs

    await driver.forget("web-1")
    assert pods_of(kube) == [] or all(p["metadata"].get("deletionTimestamp") for p in pods_of(kube))
    assert await driver.observe() == []


async def test_a_replica_set_edited_by_someone_else_is_refused(kube: KubeHarness) -> None:
    driver = kube.driver()
    await driver.start(kube.spec("web-1"))
    kube.cluster.handle(
        "PATCH",
        "/apis/apps/v1/namespaces/default/replicasets/proj-test-web-r1",
        {"metadata": {"annotations": {"io.corral.template-hash": "edited"}}},
    )
    with pytest.raises(DriverError, match="never edited"):
        await driver.start(kube.spec("web-2", serial=2))
    assert [o.instance_id for o in await driver.observe()] == ["web-1"]


async def test_without_an_image_registry_start_says_what_to_set(kube: KubeHarness) -> None:
    driver = kube.driver(settings={"image_registry": None})
    with pytest.raises(DriverError, match="image_registry") as failure:
        await driver.start(kube.spec("web-1"))
    assert "skopeo copy" in (failure.value.hint or "")
    assert kube.cluster.list("replicasets") == []


def test_without_the_client_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "lightkube", None)  # as if not installed
    with pytest.raises(PrerequisiteError, match=r"corral\[kubernetes\]"):
        create_driver("kubernetes", home=tmp_path, project="p", environment="e")
