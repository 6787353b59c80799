"""Canary analysis through a real Prometheus (Debian's `prometheus`) scraping the agent.

Prometheus runs as our own process on 127.0.0.1 with a throw-away config and data directory,
scraping the agent's metrics port every second; it is stopped by pid whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.errors import MetricsError
from corral.rollout.prometheus import PrometheusMetrics
from tests.e2e.conftest import Fleet, Load, free_port

pytestmark = pytest.mark.e2e

PROMETHEUS = "/usr/bin/prometheus"


@contextlib.contextmanager
def running_prometheus(targets: list[str]) -> Iterator[str]:
    """A Prometheus scraping `targets` every second; yields its base URL."""
    if shutil.which(PROMETHEUS) is None:
        pytest.skip("needs Debian's prometheus package (apt-get install -y prometheus)")
    work = Path(tempfile.mkdtemp(prefix="prom-", dir="/tmp"))
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: corral\n    static_configs:\n"
        f"      - targets: {json.dumps(targets)}\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (work / "log").open("w") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=2, trust_env=False).status_code == 200:
                    break
            assert process.poll() is None, (work / "log").read_text()
            assert time.monotonic() < deadline, "prometheus did not get ready in 30 s"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def wait_scraped(url: str, scrapes: int = 3) -> None:
    """Until Prometheus has scraped the agent `scrapes` times: it begins scraping a new target
    up to an interval late, and an analysis window before steady scrapes reads as empty
    (inconclusive: the roll-out then waits for a person)."""
    deadline = time.monotonic() + 30
    while True:
        seen = query(url, 'count_over_time(up{job="corral"}[1m])')
        up = query(url, 'up{job="corral"} == 1')
        if seen and up and float(str(seen[0]["value"][1])) >= scrapes:  # type: ignore[index]
            return
        assert time.monotonic() < deadline, "prometheus did not scrape the agent in 30 s"
        time.sleep(0.2)


def query(url: str, promql: str) -> list[dict[str, object]]:
    body = httpx.get(
        f"{url}/api/v1/query", params={"query": promql}, timeout=5, trust_env=False
    ).json()
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def test_a_query_prometheus_refuses_is_an_error_that_names_it() -> None:
    with running_prometheus([]) as url:
        source = PrometheusMetrics(url, {"requests": "sum(rate(x[$window])"})  # unclosed (
        watch = asyncio.run(source.watch("web", "r2", 2.0))
        with pytest.raises(MetricsError, match=r"refused the query 'sum\(rate\(x\[2000ms\]\)'"):
            asyncio.run(watch.figures())
        several = PrometheusMetrics(
            url, {"requests": 'vector(1) or label_replace(vector(2), "a", "b", "", "")'}
        )
        watch = asyncio.run(several.watch("web", "r2", 2.0))
        with pytest.raises(MetricsError, match="returned 2 series, not one"):
            asyncio.run(watch.figures())


CANARY = """      type: canary
      steps:
        - set_weight: 50
        - analysis:
            provider: prometheus
            url: {url}
            window: 4s
            min_requests: 10
            max_error_rate: 0.05
        - set_weight: 100"""


@pytest.mark.slow
def test_prometheus_analysis_passes_a_healthy_canary_and_rolls_back_a_failing_one(
    fleet: Fleet,
) -> None:
    metrics_port = free_port()
    fleet.env["CORRAL_METRICS_PORT"] = str(metrics_port)
    with running_prometheus([f"127.0.0.1:{metrics_port}"]) as url:
        fleet.edit_spec(
            "      type: rolling\n      max_surge: 1\n      max_unavailable: 0",
            CANARY.format(url=url),
        )
        fleet.ok("apply")
        wait_scraped(url)

        fleet.set_version("v2")
        with Load(fleet.url, clients=4, max_seconds=90):
            healthy = fleet.run("apply")
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert fleet.status()["services"][0]["release"] == "r2"
        verdicts = analysis_events(fleet)
        assert [e["kind"] for e in verdicts] == ["rollout.analysis_pass"], verdicts
        assert verdicts[0]["data"]["requests"] >= 10  # Prometheus saw the canary's traffic
        # the latency histogram is complete: _count and _sum reach Prometheus too
        assert query(url, 'corral_router_request_duration_seconds_count{release="r2"}')
        assert query(url, 'corral_router_request_duration_seconds_sum{release="r2"}')

        fleet.set_version("v3")
        fleet.edit_spec("GREETING: hello", 'GREETING: hello\n      FAIL_EVERY: "2"')
        with Load(fleet.url, clients=4, max_seconds=90):
            failing = fleet.run("apply")
        assert failing.returncode == 1, failing.stdout + failing.stderr
        assert "analysis failed" in failing.stdout + failing.stderr
        web = fleet.status()["services"][0]
        assert web["release"] == "r2" and {i["release"] for i in web["instances"]} == {"r2"}
        last = analysis_events(fleet)[-1]
        assert last["kind"] == "rollout.analysis_fail", last
        assert last["data"]["error_rate"] > 0.05 and last["data"]["release"] == 3


def analysis_events(fleet: Fleet) -> list[dict[str, Any]]:
    events = json.loads(fleet.ok("events", "--json", "--limit", "1000").stdout)["events"]
    return [
        e
        for e in events
        if e["kind"].startswith("rollout.analysis_") and e["kind"] != "rollout.analysis_started"
    ]
