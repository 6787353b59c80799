"""The real CLI and agent with `driver: kubernetes`, against the fake API server of
tests/conformance/kube_fake.py (no API server can run here): apply, a rolling update under
load through corral's router to the pods' addresses, a crashed container replaced, destroy.

What this cannot show: a real scheduler, kubelet, registry pull, network or admission."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Fleet, Load

pytest.importorskip("lightkube")

from tests.conformance.kube_fake import FakeCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # ~20 s: three roll-outs and a heal

SETTINGS = """driver: kubernetes
kubernetes:
  kubeconfig: {kubeconfig}
  image_registry: registry.test/team
"""


@pytest.fixture
def cluster(fleet: Fleet) -> Iterator[FakeCluster]:
    """A fake cluster whose pods run the example's app; the fleet's spec points at it."""
    work = fleet.home / "cluster"
    work.mkdir()
    made = FakeCluster(work, ["/usr/bin/python3", str(fleet.dir / "app" / "server.py")]).start()
    kubeconfig = made.write_kubeconfig(fleet.home / "kubeconfig")
    fleet.edit_spec("project: hello\n", "project: hello\n" + SETTINGS.format(kubeconfig=kubeconfig))
    try:
        yield made
    finally:
        fleet.run("destroy", timeout=60)  # before the fleet's own teardown: the cluster goes
        made.close()


def replicas(cluster: FakeCluster) -> dict[str, int]:
    return {rs["metadata"]["name"]: rs["spec"]["replicas"] for rs in cluster.list("replicasets")}


def test_apply_roll_heal_and_destroy_through_the_api(fleet: Fleet, cluster: FakeCluster) -> None:
    fleet.ok("apply")
    assert fleet.get()["greeting"] == "hello"
    assert replicas(cluster) == {"hello-dev-web-r1": 3}

    fleet.edit_spec("GREETING: hello", "GREETING: hi")
    with Load(fleet.url, clients=2) as load:
        fleet.ok("apply")
    assert load.ok > 0
    assert load.failed == 0, dict(load.errors)  # law 6 on this driver too
    assert fleet.get()["greeting"] == "hi"
    assert replicas(cluster).get("hello-dev-web-r2") == 3
    assert replicas(cluster).get("hello-dev-web-r1", 0) == 0

    # a container killed: the kubelet restarts it, corral replaces the instance (law 8)
    victim = cluster.list("pods", "io.corral.release=r2")[0]
    dead = victim["metadata"]["labels"]["io.corral.instance"]
    cluster.crash(victim["metadata"]["name"])
    deadline = time.monotonic() + 60
    while True:
        ids = {i["id"] for i in fleet.status()["services"][0]["instances"]}
        ready = fleet.status()["services"][0]["ready"]
        if dead not in ids and ready == 3:
            break
        assert time.monotonic() < deadline, fleet.status()
        time.sleep(0.2)

    fleet.ok("destroy")
    assert all(n == 0 for n in replicas(cluster).values())
    assert cluster.list("pods", "io.corral.project=hello") == [] or all(
        p["metadata"].get("deletionTimestamp") for p in cluster.list("pods")
    )
