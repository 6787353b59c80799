"""The agent's Prometheus metrics, scraped from a real agent during and after a roll-out under
load and after a kill -9 heal: the figures match what happened, and no env value leaks."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Fleet, Load, free_port
from tests.e2e.test_heal import kill_instance, wait_for

pytestmark = pytest.mark.e2e

ENV_VALUE = "zz-env-value-4711"  # must never appear in a label


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@pytest.fixture
def metered(fleet: Fleet) -> Iterator[Fleet]:
    fleet.env["CORRAL_METRICS_PORT"] = str(free_port())
    fleet.edit_spec("GREETING: hello", f"GREETING: {ENV_VALUE}")
    yield fleet


def scrape(fleet: Fleet) -> str:
    url = f"http://127.0.0.1:{fleet.env['CORRAL_METRICS_PORT']}/metrics"
    response = httpx.get(url, timeout=5.0, trust_env=False)
    response.raise_for_status()
    return response.text


def test_metrics_follow_a_rollout_under_load_and_a_heal(metered: Fleet) -> None:
    fleet = metered
    fleet.ok("apply")
    first = parse(wait_for(lambda: scrape(fleet)))
    assert total(first, "corral_instances", release="r1", state="running", health="ready") == 3
    assert total(first, "corral_rollouts_total", service="web", outcome="started") == 1
    assert total(first, "corral_rollouts_total", service="web", outcome="succeeded") == 1

    # the same figures on the agent's own API (unix socket)
    sock = next(fleet.home.rglob("api.sock"))
    transport = httpx.HTTPTransport(uds=str(sock))
    with httpx.Client(transport=transport, base_url="http://agent", timeout=5.0) as api:
        over_api = api.get("/metrics")
    assert over_api.status_code == 200 and "corral_instances" in over_api.text

    fleet.set_version("v2")
    releases_seen: set[str] = set()
    with Load(fleet.url, clients=3, max_seconds=60) as load:
        apply = fleet.popen("apply")
        try:
            deadline = time.monotonic() + 60
            while apply.poll() is None and time.monotonic() < deadline:
                during = parse(scrape(fleet))
                releases_seen |= {
                    dict(ls)["release"]
                    for (n, ls), v in during.items()
                    if n == "corral_instances" and v > 0 and dict(ls)["health"] == "ready"
                }
                time.sleep(0.05)
            out, err = apply.communicate(timeout=30)
        finally:
            if apply.poll() is None:
                apply.kill()
                apply.wait()
        assert apply.returncode == 0, out + err
        time.sleep(0.3)
    assert {"r1", "r2"} <= releases_seen  # scraped mid roll-out: both releases ready
    after = parse(scrape(fleet))
    assert total(after, "corral_instances", release="r2", health="ready") == 3
    assert total(after, "corral_instances", release="r1") == 0
    assert total(after, "corral_rollouts_total", outcome="succeeded") == 2
    assert total(after, "corral_rollouts_total", outcome="rolled_back") == 0
    assert load.failed == 0, dict(load.errors)
    # every request the load made went through the router and was counted per release
    routed = total(after, "corral_router_requests_total", service="web")
    assert routed >= load.ok > 0
    assert total(after, "corral_router_requests_total", release="r2") > 0
    assert total(after, "corral_router_failed_requests_total", service="web") == 0
    assert total(after, "corral_router_errors_total", service="web") == 0
    for release in ("r1", "r2"):  # the histogram's +Inf bucket holds every request
        inf = total(
            after, "corral_router_request_duration_seconds_bucket", release=release, le="+Inf"
        )
        assert inf == total(after, "corral_router_requests_total", release=release)
    assert total(after, "corral_audit_duration_seconds_count") >= 1
    assert total(after, "corral_audit_findings_total") == 0

    victim = next(i["id"] for i in fleet.status()["services"][0]["instances"])
    kill_instance(fleet, victim)

    def healed() -> bool:
        web = fleet.status()["services"][0]
        return victim not in {i["id"] for i in web["instances"]} and web["ready"] == 3

    wait_for(healed)
    text = scrape(fleet)
    healed_figures = parse(text)
    assert total(healed_figures, "corral_replacements_total", service="web", reason="exited") == 1
    assert total(healed_figures, "corral_replacements_total", reason="liveness") == 0
    assert total(healed_figures, "corral_heals_total", service="web", outcome="succeeded") >= 1
    assert (
        total(healed_figures, "corral_instances", release="r2", state="running", health="ready")
        == 3
    )
    labels = {value for (_, ls) in healed_figures for _, value in ls}
    assert ENV_VALUE not in text and not any(ENV_VALUE in value for value in labels)
