"""The agent's Prometheus metrics: fed by the events it already emits, read at scrape time.

Counters of things that happen (replacements and their reason, roll-outs, audits) follow the
agent's events (`observe_event`), so the controller needs no metric calls of its own. Figures
that already exist (instances in the state store and the instance book, the router's per-release
counters and latency buckets) are copied out by a custom collector when Prometheus scrapes, so
the router's hot path is not touched.

Labels are names only (service, release, state, health, reason): never an env value, a secret
or an evidence string (law 5).

`corral_router_request_duration_seconds` is a full histogram (`_bucket`, `_sum`, `_count`) of
the responses backends delivered; `corral_router_requests_total` also counts the requests the
router itself failed. Analysis through Prometheus (`rollout/prometheus.py`) queries these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from corral.router.protocol import LATENCY_BUCKETS_MS, Router
from corral.state.protocol import StateStore

log = logging.getLogger("corral.agent")

PORT_ENV = "CORRAL_METRICS_PORT"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# event kind → replacement reason (law 8); each of these events marks one instance for
# replacement from its own release
REPLACEMENT_REASONS = {
    "instance.exited": "exited",
    "instance.unhealthy": "liveness",
    "instance.tampered": "tampered",
    "instance.drifted": "drifted",
}
ROLLOUT_OUTCOMES = {
    "rollout.started": "started",
    "rollout.succeeded": "succeeded",
    "rollout.rolled_back": "rolled_back",
    "rollout.failed": "failed",
}


class Book(Protocol):
    def health(self, instance_id: str) -> str: ...


class AgentMetrics:
    """One registry per agent (no process-global state), served by `render` or `serve`."""

    def __init__(self, store: StateStore, router: Router, book: Book) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.replacements = Counter(
            "corral_replacements",
            "Instances marked for replacement by the agent, by reason",
            ["service", "reason"],
            registry=self.registry,
        )
        self.heals = Counter(
            "corral_heals",
            "Heal attempts that ended, by outcome (succeeded, backoff)",
            ["service", "outcome"],
            registry=self.registry,
        )
        self.rollouts = Counter(
            "corral_rollouts",
            "Roll-outs by outcome (started, succeeded, rolled_back, failed)",
            ["service", "outcome"],
            registry=self.registry,
        )
        self.audit_seconds = Histogram(
            "corral_audit_duration_seconds",
            "Duration of the agent's instance audits (files vs manifest, config vs release)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.audit_findings = Counter(
            "corral_audit_findings",
            "Instances found tampered with or drifted by the audit, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.audit_last = Gauge(
            "corral_audit_last_findings",
            "Instances found tampered with or drifted by the latest audit",
            registry=self.registry,
        )
        self.registry.register(_Snapshot(store, router, book))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- fed by the agent -------------------------------------------------------------------

    def observe_event(self, kind: str, service: str | None, data: dict[str, Any]) -> None:
        name = service or ""
        if kind in REPLACEMENT_REASONS:
            self.replacements.labels(name, REPLACEMENT_REASONS[kind]).inc()
        elif kind in ROLLOUT_OUTCOMES:
            self.rollouts.labels(name, ROLLOUT_OUTCOMES[kind]).inc()
        elif kind == "heal.succeeded":
            self.heals.labels(name, "succeeded").inc()
        elif kind == "heal.backoff":
            self.heals.labels(name, "backoff").inc()

    def observe_audit(self, seconds: float, tampered: int, drifted: int) -> None:
        self.audit_seconds.observe(seconds)
        self.audit_findings.labels("tampered").inc(tampered)
        self.audit_findings.labels("drifted").inc(drifted)
        self.audit_last.set(tampered + drifted)

    # -- exposition -------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format, for `GET /metrics` on the agent's API."""
        return generate_latest(self.registry)

    def serve(self, port: int) -> int:
        """Serve `/metrics` on 127.0.0.1:port (0 = any free port); returns the port bound."""
        server, thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        self._server, self._thread = server, thread
        return int(server.server_address[1])

    async def serve_when_free(self, port: int | None, timeout: float = 10.0) -> None:
        """Serve on `port` once it is free: after `corral agent restart` the predecessor holds
        it until it exits. Gives up (logged) after `timeout`; /metrics on the API still works."""
        if port is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                bound = self.serve(port)
            except OSError as exc:
                if time.monotonic() >= deadline:
                    log.error("metrics port %d: %s; choose another --metrics-port", port, exc)
                    return
                await asyncio.sleep(0.2)
                continue
            log.info("metrics on http://127.0.0.1:%d/metrics", bound)
            return

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def port_from(
    arg: int | None, environ: dict[str, str] | os._Environ[str] = os.environ
) -> int | None:
    """The metrics port: `--metrics-port`, else $CORRAL_METRICS_PORT; None (off) when neither."""
    if arg is not None:
        return arg
    raw = environ.get(PORT_ENV, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


class _Snapshot(Collector):
    """Instances and router figures, copied out at scrape time."""

    def __init__(self, store: StateStore, router: Router, book: Book) -> None:
        self.store = store
        self.router = router
        self.book = book

    def describe(self) -> Iterable[Metric]:
        return []  # families are created per scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        yield self._instances()
        yield from self._router()

    def _instances(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "corral_instances",
            "Instances recorded by the agent, by service, release, state and health",
            labels=["service", "release", "state", "health"],
        )
        counts: dict[tuple[str, str, str, str], int] = {}
        for record in self.store.list_instances():
            key = (
                record.service,
                f"r{record.release}",
                record.state.value,
                self.book.health(record.id),
            )
            counts[key] = counts.get(key, 0) + 1
        for labels, count in sorted(counts.items()):
            family.add_metric(list(labels), count)
        return family

    def _router(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "corral_router_requests",
            "Requests through the router that ended, by service and release",
            labels=["service", "release"],
        )
        backend_5xx = CounterMetricFamily(
            "corral_router_backend_5xx",
            "5xx responses answered by a backend, by service and release",
            labels=["service", "release"],
        )
        errors = CounterMetricFamily(
            "corral_router_errors",
            "Requests the router itself had to fail (502/503/504), by service and release",
            labels=["service", "release"],
        )
        failed = CounterMetricFamily(
            "corral_router_failed_requests",
            "Requests the router had to fail, by service (including those no backend took)",
            labels=["service"],
        )
        retries = CounterMetricFamily(
            "corral_router_retries",
            "Idempotent requests retried on another backend, by service",
            labels=["service"],
        )
        in_flight = GaugeMetricFamily(
            "corral_router_in_flight",
            "Requests in flight, by service and release",
            labels=["service", "release"],
        )
        latency = HistogramMetricFamily(
            "corral_router_request_duration_seconds",
            "Backend response latency through the router",
            labels=["service", "release"],
        )
        for service in sorted(self.router.routes()):
            with contextlib.suppress(Exception):  # a route closed mid-scrape
                stats = self.router.stats(service)
                retries.add_metric([service], stats.retries)
                failed.add_metric([service], stats.router_errors)
                for release, figures in sorted(stats.by_release.items()):
                    labels = [service, release]
                    requests.add_metric(labels, figures.requests)
                    backend_5xx.add_metric(labels, figures.responses_5xx)
                    errors.add_metric(labels, figures.router_errors)
                    in_flight.add_metric(labels, figures.in_flight)
                    latency.add_metric(
                        labels, _cumulative(figures.latency_buckets), figures.latency_sum_seconds
                    )
        yield from (requests, backend_5xx, errors, failed, retries, in_flight, latency)


def _cumulative(buckets: list[int]) -> list[tuple[str, float]]:
    """The router's per-bucket counts (ms bounds) → Prometheus' cumulative `le` buckets (s)."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound_ms, count in zip(LATENCY_BUCKETS_MS, buckets, strict=True):
        total += count
        le = "+Inf" if bound_ms == float("inf") else repr(bound_ms / 1000.0)
        out.append((le, float(total)))
    return out
