"""Judging a release by its figures over a window.

A window with too few requests is *inconclusive*, not a pass: low traffic proves nothing.
Where the figures come from is an interface (`MetricsSource`): the embedded router's counters
(`RouterMetrics`, the default) or a Prometheus server (`rollout/prometheus.py`). A source is
asked to `watch` a release when the window opens and for its `figures` when it closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from corral.rollout.steps import Verdict
from corral.router.protocol import LATENCY_BUCKETS_MS, ReleaseStats, Router


@dataclass(frozen=True)
class Sample:
    """Cumulative counters of one release at one moment."""

    requests: int
    errors: int  # backend 5xx + router-made errors
    buckets: tuple[int, ...]

    @classmethod
    def of(cls, stats: ReleaseStats | None) -> Sample:
        if stats is None:
            return cls(0, 0, (0,) * len(LATENCY_BUCKETS_MS))
        return cls(
            stats.requests,
            stats.responses_5xx + stats.router_errors,
            tuple(stats.latency_buckets),
        )

    def since(self, before: Sample) -> Sample:
        return Sample(
            self.requests - before.requests,
            self.errors - before.errors,
            tuple(a - b for a, b in zip(self.buckets, before.buckets, strict=True)),
        )

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p99_ms(self) -> float | None:
        return self.percentile_ms(0.99)

    def percentile_ms(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile (None without requests)."""
        total = sum(self.buckets)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for bound, count in zip(LATENCY_BUCKETS_MS, self.buckets, strict=True):
            seen += count
            if seen >= rank:
                return bound
        return LATENCY_BUCKETS_MS[-1]


@dataclass(frozen=True)
class Figures:
    """One release's figures over a window, as a provider that computes rates reports them."""

    requests: int
    error_rate: float
    p99_ms: float | None

    @property
    def errors(self) -> int:
        return round(self.requests * self.error_rate)


class Window(Protocol):
    """What `judge` reads: a `Sample` difference or provider `Figures`."""

    @property
    def requests(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def error_rate(self) -> float: ...
    @property
    def p99_ms(self) -> float | None: ...


class Watch(Protocol):
    async def figures(self) -> Window:
        """The release's figures since the watch began. Raises MetricsError."""
        ...


class MetricsSource(Protocol):
    async def watch(self, service: str, release: str, window: float) -> Watch:
        """Open a window of `window` seconds on `release` now; problems surface in `figures`."""
        ...


class RouterMetrics:
    """The embedded router's counters as a metrics source."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def sample(self, service: str, release: str) -> Sample:
        if service not in self.router.routes():
            return Sample.of(None)
        return Sample.of(self.router.stats(service).by_release.get(release))

    async def watch(self, service: str, release: str, window: float) -> Watch:
        return _RouterWatch(self, service, release, self.sample(service, release))


@dataclass(frozen=True)
class _RouterWatch:
    source: RouterMetrics
    service: str
    release: str
    before: Sample

    async def figures(self) -> Window:
        return self.source.sample(self.service, self.release).since(self.before)


def judge(new: Window, stable: Window | None, analysis: dict[str, Any]) -> Verdict:
    """pass / fail / inconclusive for one window, with the figures that decided it."""
    min_requests = int(analysis.get("min_requests", 20))
    max_error_rate = float(analysis.get("max_error_rate", 0.01))
    max_p99 = analysis.get("max_p99_ms")
    p99 = new.p99_ms
    figures: dict[str, float] = {
        "requests": float(new.requests),
        "errors": float(new.errors),
        "error_rate": round(new.error_rate, 4),
    }
    if p99 is not None:
        figures["p99_ms"] = p99
    if new.requests < min_requests:
        return Verdict(
            "inconclusive",
            f"{new.requests} requests in the window, fewer than {min_requests}",
            figures,
        )
    if new.error_rate > max_error_rate:
        return Verdict(
            "fail",
            f"error rate {new.error_rate:.1%} over {new.requests} requests > {max_error_rate:.1%}",
            figures,
        )
    if max_p99 is not None and p99 is not None and p99 > float(max_p99):
        return Verdict("fail", f"p99 {p99:g} ms > {float(max_p99):g} ms", figures)
    if analysis.get("compare_to_stable") and stable is not None and stable.requests:
        figures["stable_error_rate"] = round(stable.error_rate, 4)
        if new.error_rate > stable.error_rate + max_error_rate:
            return Verdict(
                "fail",
                f"error rate {new.error_rate:.1%} vs {stable.error_rate:.1%} for the stable "
                "release",
                figures,
            )
    return Verdict("pass", f"error rate {new.error_rate:.1%} over {new.requests} requests", figures)
