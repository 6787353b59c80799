"""The Prometheus metrics source without a Prometheus: what goes wrong is inconclusive, never a
crash; the spec's new fields leave existing settings as they were. (Against a real Prometheus:
tests/e2e/test_prometheus.py.)"""

from __future__ import annotations

import pytest

from corral.errors import MetricsError
from corral.rollout.executor import Executor
from corral.rollout.prometheus import PrometheusMetrics, promql_duration
from corral.rollout.steps import Analyse
from corral.spec.model import AnalysisSpec, CanaryStrategy
from tests.e2e.conftest import free_port
from tests.unit.test_executor import TARGET, Harness


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


async def test_an_unreachable_prometheus_is_an_error_that_names_it() -> None:
    url = closed_url()
    watch = await PrometheusMetrics(url).watch("web", "r2", 1.0)
    with pytest.raises(MetricsError, match=f"Prometheus at {url} could not be reached"):
        await watch.figures()


async def test_a_bad_placeholder_is_an_error_not_a_crash() -> None:
    watch = await PrometheusMetrics(closed_url(), {"requests": "up{x=$nope}"}).watch(
        "web", "r2", 1.0
    )
    with pytest.raises(MetricsError, match="bad placeholder"):
        await watch.figures()


async def test_analysis_with_prometheus_unreachable_is_inconclusive_with_the_reason() -> None:
    harness = Harness()
    await harness.router.open_route("web", "127.0.0.1", 8000)
    step = Analyse(2, {"provider": "prometheus", "url": closed_url(), "window": 0.01})
    verdict = await harness.executor._analyse(TARGET, step, None)
    assert verdict.result == "inconclusive"
    assert "could not be reached" in verdict.detail
    assert any(kind == "rollout.analysis_inconclusive" for kind, _ in harness.events)


def test_the_router_stays_the_source_unless_the_spec_names_prometheus() -> None:
    executor: Executor = Harness().executor
    assert executor.metrics_for({"window": 1}) is executor.metrics
    source = executor.metrics_for({"provider": "prometheus", "url": "http://127.0.0.1:9/"})
    assert isinstance(source, PrometheusMetrics) and source.url == "http://127.0.0.1:9"


def test_durations_become_promql_ranges() -> None:
    assert promql_duration(2.5) == "2500ms"
    assert promql_duration(0.0001) == "1ms"


def test_provider_fields_appear_in_settings_only_when_set() -> None:
    before = {
        "window": 10.0,
        "max_error_rate": 0.01,
        "max_p99_ms": None,
        "min_requests": 20,
        "inconclusive": "pause",
        "compare_to_stable": False,
    }
    assert AnalysisSpec().model_dump() == before  # settings recorded earlier: unchanged
    strategy = CanaryStrategy.model_validate(
        {"steps": [{"analysis": {"provider": "prometheus", "url": "http://127.0.0.1:9090"}}]}
    ).model_dump()
    assert strategy["steps"][0]["analysis"] == {
        **before,
        "provider": "prometheus",
        "url": "http://127.0.0.1:9090",
    }
    assert "provider" not in strategy["analysis"]


@pytest.mark.parametrize(
    "given, message",
    [
        ({"provider": "prometheus"}, "needs `url:`"),
        ({"url": "http://127.0.0.1:9090"}, "need `provider: prometheus`"),
    ],
)
def test_provider_and_url_go_together(given: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnalysisSpec.model_validate(given)
