"""Request counters of a route, cheap to bump on the hot path, copied out as `RouteStats`.

The proxy holds a `ReleaseCounters` reference in each backend, so counting a response is a
few attribute increments and one `bisect` (no dict lookup, no allocation).
"""

from __future__ import annotations

from bisect import bisect_left

from corral.router.protocol import LATENCY_BUCKETS_MS, ReleaseStats, RouteStats

# Upper bounds in seconds, so a latency measured in seconds needs no conversion.
_BOUNDS_S = tuple(bound / 1000.0 for bound in LATENCY_BUCKETS_MS)


class ReleaseCounters:
    __slots__ = (
        "buckets",
        "in_flight",
        "latency_sum",
        "requests",
        "responses_5xx",
        "router_errors",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.responses_5xx = 0
        self.router_errors = 0
        self.in_flight = 0
        self.buckets = [0] * len(LATENCY_BUCKETS_MS)
        self.latency_sum = 0.0

    def observe(self, status: int, seconds: float) -> None:
        """One response delivered by a backend of this release."""
        self.requests += 1
        if status >= 500:
            self.responses_5xx += 1
        self.buckets[bisect_left(_BOUNDS_S, seconds)] += 1
        self.latency_sum += seconds

    def snapshot(self) -> ReleaseStats:
        return ReleaseStats(
            requests=self.requests,
            responses_5xx=self.responses_5xx,
            router_errors=self.router_errors,
            latency_buckets=list(self.buckets),
            in_flight=self.in_flight,
            latency_sum_seconds=self.latency_sum,
        )


class RouteCounters:
    __slots__ = ("by_release", "requests", "retries", "router_errors")

    def __init__(self) -> None:
        self.requests = 0
        self.router_errors = 0
        self.retries = 0
        self.by_release: dict[str, ReleaseCounters] = {}

    def release(self, label: str) -> ReleaseCounters:
        counters = self.by_release.get(label)
        if counters is None:
            counters = self.by_release[label] = ReleaseCounters()
        return counters

    def snapshot(self, service: str, port: int, ejected: set[str]) -> RouteStats:
        return RouteStats(
            service=service,
            port=port,
            requests=self.requests,
            router_errors=self.router_errors,
            retries=self.retries,
            by_release={label: c.snapshot() for label, c in self.by_release.items()},
            ejected=ejected,
        )
