"""The kubernetes driver's traffic (a Service per release and a Gateway API HTTPRoute weighted as
corral's router) and its copies of running pods' logs, against the fake API server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.drivers.protocol import SplitsTraffic
from corral.errors import DriverError
from corral.logs.format import parse
from tests.conformance.gateway_schema import problems

pytest.importorskip("lightkube")

from tests.conformance.kube_harness import KubeHarness  # fixture `kube`: conftest

ROUTE = "proj-test-web"  # dns_name(project, environment, service)


def route_weights(kube: KubeHarness) -> dict[str, int] | None:
    routes = kube.cluster.list("httproutes")
    if not routes:
        return None
    (route,) = routes
    (rule,) = route["spec"]["rules"]
    return {ref["name"]: ref["weight"] for ref in rule["backendRefs"]}


def services(kube: KubeHarness) -> set[str]:
    return {s["metadata"]["name"] for s in kube.cluster.list("services")}


async def test_the_route_follows_the_weights_and_a_retired_release_leaves_it_then_its_service(
    kube: KubeHarness,
) -> None:
    driver = kube.driver(settings={"gateway": "public"})
    assert isinstance(driver, SplitsTraffic)
    await driver.start(kube.spec("web-1", serial=1, release=1))
    await driver.start(kube.spec("web-2", serial=2, release=2))

    await driver.set_weights("web", {1: 90, 2: 10})
    assert route_weights(kube) == {"proj-test-web-r1": 90, "proj-test-web-r2": 10}
    assert services(kube) == {"proj-test-web-r1", "proj-test-web-r2"}
    (route,) = kube.cluster.list("httproutes")
    assert route["spec"]["parentRefs"] == [{"name": "public"}]
    assert problems(route) == []  # the Gateway API's own schema accepts what was written
    service = kube.cluster.list("services", "io.corral.release=r2")[0]
    assert service["spec"]["selector"]["io.corral.release"] == "r2"
    assert service["spec"]["ports"][0]["port"] == 8080

    # the same split again sends nothing
    asked = len(kube.cluster.requests)
    await driver.set_weights("web", {1: 90, 2: 10})
    assert len(kube.cluster.requests) == asked

    # r1 retired: its backendRef leaves the route before its Service goes
    await driver.set_weights("web", {2: 100})
    assert route_weights(kube) == {"proj-test-web-r2": 100}
    assert services(kube) == {"proj-test-web-r2"}
    done = kube.cluster.requests[asked:]
    patched = done.index(
        ("PATCH", f"/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/{ROUTE}")
    )
    deleted = done.index(("DELETE", "/api/v1/namespaces/default/services/proj-test-web-r1"))
    assert patched < deleted

    # no longer routed (destroy, or the route removed from the spec): route and Services go
    await driver.set_weights("web", {})
    assert route_weights(kube) is None
    assert services(kube) == set()


async def test_without_a_gateway_the_driver_writes_no_route(kube: KubeHarness) -> None:
    driver = kube.driver()
    await driver.start(kube.spec("web-1", serial=1, release=1))
    asked = len(kube.cluster.requests)
    await driver.set_weights("web", {1: 100})
    assert kube.cluster.requests[asked:] == []
    assert kube.cluster.list("httproutes") == [] and services(kube) == set()


async def test_a_refused_write_is_an_error_then_written_on_the_next_observe(
    kube: KubeHarness,
) -> None:
    driver = kube.driver(settings={"gateway": "public"})
    await driver.start(kube.spec("web-1", serial=1, release=1))
    kube.cluster.refused["httproutes"] = 403
    with pytest.raises(DriverError, match="HTTPRoute"):
        await driver.set_weights("web", {1: 100})
    kube.cluster.refused["httproutes"] = 404  # a cluster without the Gateway API's CRDs
    with pytest.raises(DriverError, match="no Gateway API HTTPRoute") as failure:
        await driver.set_weights("web", {1: 100})
    assert "kubernetes.gateway" in (failure.value.hint or "")
    await driver.observe()  # still refused: observe carries on
    assert route_weights(kube) is None
    kube.cluster.refused.clear()
    await driver.observe()
    assert route_weights(kube) == {"proj-test-web-r1": 100}


def _texts(path: Path) -> list[tuple[str | None, str]]:
    return [(r.stream, r.text) for r in map(parse, path.read_text().splitlines())]


async def test_a_running_pods_log_is_copied_on_observe_once_each_line(kube: KubeHarness) -> None:
    driver = kube.driver(log_every=0.0)
    started = await driver.start(kube.spec("web-1", serial=1))
    pod = started.driver_ref.removeprefix("pod:")
    log = driver.log_path("web-1")
    assert log is not None

    kube.cluster.append_log(pod, "first line\nsecond line")
    await driver.observe()
    lines = _texts(log)
    # the app's own output, both streams (the pod's app cannot know corral's instance id)
    assert ("stdout", "hello from ?") in lines and ("stdout", "stderr of ?") in lines
    assert lines[-2:] == [("stdout", "first line"), ("stdout", "second line")]
    assert all(parse(line).time is not None for line in log.read_text().splitlines())

    await driver.observe()  # nothing new: nothing appended
    assert _texts(log) == lines
    kube.cluster.append_log(pod, "third line")
    await driver.observe()
    assert _texts(log) == [*lines, ("stdout", "third line")]

    # a restarted agent (a new driver) continues after the file's last line; the agent and a
    # CLI observing at the same time copy each line once
    again = kube.driver(log_every=0.0)
    kube.cluster.append_log(pod, "fourth line")
    await again.observe()
    assert _texts(log) == [*lines, ("stdout", "third line"), ("stdout", "fourth line")]
    kube.cluster.append_log(pod, "fifth line")
    for _ in range(5):
        await asyncio.gather(driver.observe(), again.observe())
    assert _texts(log)[-3:] == [("stdout", t) for t in ("third line", "fourth line", "fifth line")]


async def test_a_running_pods_log_is_read_at_most_every_log_every_seconds(
    kube: KubeHarness,
) -> None:
    driver = kube.driver(log_every=3600.0)  # 2 s by default; an hour: the second is too soon
    started = await driver.start(kube.spec("web-1", serial=1))
    pod = started.driver_ref.removeprefix("pod:")

    def reads() -> int:
        return sum(1 for m, p in kube.cluster.requests if p.endswith(f"/pods/{pod}/log"))

    await driver.observe()
    first = reads()
    await driver.observe()
    assert first == 1 and reads() == first
