"""The real CLI and agent with `driver: kubernetes`, against the fake API server of
tests/conformance/kube_fake.py (no API server can run here): apply, a rolling update under
load through corral's router to the pods' addresses, a crashed container replaced, destroy;
the service's HTTPRoute following a canary's weights step by step and a rollback; `corral
logs` showing what running pods print.

What this cannot show: a real scheduler, kubelet, registry pull, network, admission, or a
Gateway controller carrying the HTTPRoute's traffic."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Fleet, Load

pytest.importorskip("lightkube")

from tests.conformance.gateway_schema import problems
from tests.conformance.kube_fake import FakeCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # ~20 s each: roll-outs and a heal

SETTINGS = """driver: kubernetes
kubernetes:
  kubeconfig: {kubeconfig}
  image_registry: registry.test/team
  gateway: public
"""

ROLLING = "type: rolling\n      max_surge: 1\n      max_unavailable: 0"
CANARY = """type: canary
      steps:
        - set_weight: 25
        - pause: {}
        - set_weight: 50
        - pause: {}"""
R1, R2 = "hello-dev-web-r1", "hello-dev-web-r2"


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

    assert weights(cluster) == {R2: 100}  # the route followed the rolling update too
    fleet.ok("destroy")
    assert weights(cluster) is None and services(cluster) == set()
    assert all(n == 0 for n in replicas(cluster).values())
    assert cluster.list("pods", "io.corral.project=hello") == [] or all(
        p["metadata"].get("deletionTimestamp") for p in cluster.list("pods")
    )


def weights(cluster: FakeCluster) -> dict[str, int] | None:
    routes = cluster.list("httproutes")
    if not routes:
        return None
    return {ref["name"]: ref["weight"] for ref in routes[0]["spec"]["rules"][0]["backendRefs"]}


def services(cluster: FakeCluster) -> set[str]:
    return {s["metadata"]["name"] for s in cluster.list("services")}


def until(what: Callable[[], Any], want: Any, seen: list[Any]) -> None:
    """Poll the fake (bounded) until `what()` is `want`; every distinct value goes to `seen`."""
    deadline = time.monotonic() + 60
    while True:
        now = what()
        if not seen or seen[-1] != now:
            seen.append(now)
        if now == want:
            return
        assert time.monotonic() < deadline, f"never {want}; saw {seen}"
        time.sleep(0.05)


def test_the_http_route_follows_a_canary_and_a_rollback(fleet: Fleet, cluster: FakeCluster) -> None:
    fleet.edit_spec(ROLLING, CANARY)
    fleet.ok("apply")
    seen: list[Any] = []
    until(lambda: weights(cluster), {R1: 100}, seen)
    assert services(cluster) == {R1}

    fleet.edit_spec("GREETING: hello", "GREETING: hi")
    fleet.ok("apply")  # returns at the first pause, waiting for a person
    until(lambda: weights(cluster), {R1: 75, R2: 25}, seen)
    assert services(cluster) == {R1, R2}
    assert problems(cluster.list("httproutes")[0]) == []  # the Gateway API's schema accepts it
    fleet.ok("rollout", "promote", "web")
    until(lambda: weights(cluster), {R1: 50, R2: 50}, seen)

    fleet.ok("rollback", "web")  # aborts the canary: all traffic back on r1 at once
    until(lambda: weights(cluster), {R1: 100}, seen)
    until(lambda: services(cluster), {R1}, seen)  # r2 retired: out of the route, then its Service
    assert fleet.status()["services"][0]["release"] == "r1"

    fleet.ok("apply")  # r2 again, this time to the end
    until(lambda: weights(cluster), {R1: 75, R2: 25}, seen)
    fleet.ok("rollout", "promote", "web")
    until(lambda: weights(cluster), {R1: 50, R2: 50}, seen)
    fleet.ok("rollout", "promote", "web")
    until(lambda: weights(cluster), {R2: 100}, seen)
    until(lambda: services(cluster), {R2}, seen)
    assert fleet.get()["greeting"] == "hi"

    fleet.ok("destroy")
    assert weights(cluster) is None and services(cluster) == set()


def test_corral_logs_shows_what_running_pods_print(fleet: Fleet, cluster: FakeCluster) -> None:
    fleet.ok("apply")
    pod = cluster.list("pods", "io.corral.project=hello")[0]
    instance = pod["metadata"]["labels"]["io.corral.instance"]
    cluster.append_log(pod["metadata"]["name"], "a line only the cluster has")
    deadline = time.monotonic() + 60
    while True:  # the agent copies a running pod's log at most every 2 s
        shown = fleet.run("logs", "web").stdout
        if "a line only the cluster has" in shown:
            break
        assert time.monotonic() < deadline, shown
        time.sleep(0.5)
    line = next(x for x in shown.splitlines() if "a line only the cluster has" in x)
    assert instance in line
