"""A Prometheus server as the metrics source of an analysis (`provider: prometheus`).

Each figure is one instant query (`GET /api/v1/query`) at the end of the window, over a range
as long as the window. The default queries read what the agent itself exports on /metrics
(`agent/metrics.py`), so a Prometheus that scrapes the agent needs no other configuration;
`queries:` in the spec replaces any of them. A window should span at least two scrapes, or
`increase()` has nothing to compare and the window reads as empty (inconclusive).

Whatever goes wrong here (Prometheus unreachable, a query it refuses, an answer of the wrong
shape) is a `MetricsError` that says what and where; the executor turns it into an
*inconclusive* verdict, never a crash of the roll-out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from string import Template
from typing import Any

import httpx

from corral.errors import MetricsError
from corral.rollout.analysis import Figures, Watch, Window

_SELECTOR = 'service="$service",release="$release"'
_REQUESTS = f"sum(increase(corral_router_requests_total{{{_SELECTOR}}}[$window]))"
DEFAULT_QUERIES: dict[str, str] = {
    "requests": _REQUESTS,
    # backend 5xx and router-made errors over every request that ended
    "error_rate": (
        f"(sum(increase(corral_router_backend_5xx_total{{{_SELECTOR}}}[$window]))"
        f" + sum(increase(corral_router_errors_total{{{_SELECTOR}}}[$window])))"
        f" / {_REQUESTS}"
    ),
    "p99_ms": (
        "1000 * histogram_quantile(0.99, sum by (le) "
        f"(increase(corral_router_request_duration_seconds_bucket{{{_SELECTOR}}}[$window])))"
    ),
}
TIMEOUT = 5.0


def promql_duration(seconds: float) -> str:
    """A PromQL range: whole milliseconds, at least 1 ms (`2.5s` → `2500ms`)."""
    return f"{max(1, round(seconds * 1000))}ms"


class PrometheusMetrics:
    """Figures of a release from a Prometheus server's HTTP API."""

    def __init__(self, url: str, queries: dict[str, str | None] | None = None) -> None:
        self.url = url.rstrip("/")
        given = {k: v for k, v in (queries or {}).items() if v}
        self.queries = {**DEFAULT_QUERIES, **given}

    @classmethod
    def from_analysis(cls, analysis: dict[str, Any]) -> PrometheusMetrics:
        return cls(str(analysis["url"]), analysis.get("queries"))

    async def watch(self, service: str, release: str, window: float) -> Watch:
        return _PrometheusWatch(self, service, release, window)

    async def query(self, client: httpx.AsyncClient, promql: str) -> float | None:
        """The single value `promql` yields now; None for no series or NaN."""
        where = f"Prometheus at {self.url}"
        try:
            response = await client.get(f"{self.url}/api/v1/query", params={"query": promql})
        except httpx.HTTPError as exc:
            raise MetricsError(
                f"{where} could not be reached: {str(exc) or type(exc).__name__}",
                hint="Check the analysis `url:` and that Prometheus runs.",
            ) from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise MetricsError(
                f"{where} answered HTTP {response.status_code} with no JSON; is it Prometheus?",
                hint="`url:` is the server's base URL, e.g. http://127.0.0.1:9090",
            ) from exc
        if body.get("status") != "success":
            raise MetricsError(
                f"{where} refused the query {promql!r}: "
                f"{body.get('errorType', 'error')}: {body.get('error', response.status_code)}",
                hint="Fix the analysis `queries:` (PromQL; $service, $release, $window).",
            )
        return _single_value(body.get("data") or {}, promql, where)


def _single_value(data: dict[str, Any], promql: str, where: str) -> float | None:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        raw = result[1]
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return None
        if len(result) > 1:
            raise MetricsError(
                f"{where}: the query {promql!r} returned {len(result)} series, not one",
                hint="Aggregate it, e.g. with sum(...).",
            )
        raw = result[0]["value"][1]
    else:
        raise MetricsError(
            f"{where}: the query {promql!r} returned a {kind}, not one number",
            hint="An analysis query must yield a single instant value.",
        )
    value = float(raw)
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class _PrometheusWatch:
    source: PrometheusMetrics
    service: str
    release: str
    window: float

    def _promql(self, name: str) -> str:
        try:
            return Template(self.source.queries[name]).substitute(
                service=self.service, release=self.release, window=promql_duration(self.window)
            )
        except (KeyError, ValueError) as exc:
            raise MetricsError(
                f"the analysis query {name} {self.source.queries[name]!r} has a bad "
                f"placeholder: {exc}",
                hint="Only $service, $release and $window are filled in ($$ for a dollar).",
            ) from exc

    async def figures(self) -> Window:
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as client:
            requests = await self.source.query(client, self._promql("requests"))
            error_rate = await self.source.query(client, self._promql("error_rate"))
            p99 = await self.source.query(client, self._promql("p99_ms"))
        return Figures(
            requests=round(requests or 0.0),
            error_rate=error_rate or 0.0,
            p99_ms=round(p99, 3) if p99 is not None else None,
        )
