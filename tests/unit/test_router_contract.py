"""The Router contract, run against every implementation: EmbeddedRouter (real sockets and
HTTP) and InMemoryRouter (the fake that roll-out logic tests use). A harness per
implementation plays traffic the way that implementation allows."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Protocol

import httpx
import pytest

from corral.errors import PortInUseError, UsageError
from corral.router.memory import InMemoryRouter
from corral.router.protocol import Backend, Router
from corral.router.proxy import EmbeddedRouter
from tests.unit.test_router_support import AppServer


class Harness(Protocol):
    @property
    def router(self) -> Router: ...

    async def backend(self, name: str, release: str = "r1", weight: int = 1) -> Backend: ...

    async def hit(self, service: str) -> str | None:
        """One request to the service: the instance that answered it (None: none did)."""
        ...

    async def begin_slow(self, service: str, name: str) -> None:
        """A request in flight on instance `name` (the only one routed) until `end_slow`."""
        ...

    async def end_slow(self, name: str) -> None: ...


class EmbeddedHarness:
    def __init__(self) -> None:
        self.router = EmbeddedRouter()
        self.apps: dict[str, AppServer] = {}
        self.client = httpx.AsyncClient(trust_env=False, timeout=20)
        self.slow: dict[str, asyncio.Task[httpx.Response]] = {}

    async def backend(self, name: str, release: str = "r1", weight: int = 1) -> Backend:
        self.apps[name] = app = await AppServer(name).start()
        return app.backend(release, weight)

    async def hit(self, service: str) -> str | None:
        port = self.router.routes()[service]
        response = await self.client.get(f"http://127.0.0.1:{port}/who")
        return response.text if response.status_code == 200 else None

    async def begin_slow(self, service: str, name: str) -> None:
        port = self.router.routes()[service]
        self.slow[name] = asyncio.create_task(self.client.get(f"http://127.0.0.1:{port}/slow"))
        await self.apps[name].started.wait()

    async def end_slow(self, name: str) -> None:
        self.apps[name].gate.set()
        assert (await self.slow.pop(name)).status_code == 200

    async def close(self) -> None:
        await self.router.close()
        await self.client.aclose()
        for app in self.apps.values():
            await app.close()


class MemoryHarness:
    def __init__(self) -> None:
        self.router = self.memory = InMemoryRouter(hold_timeout=0.1)
        self.services: dict[str, str] = {}

    async def backend(self, name: str, release: str = "r1", weight: int = 1) -> Backend:
        return Backend(name, release, "127.0.0.1", 20_000 + len(name), weight)

    async def hit(self, service: str) -> str | None:
        backend = self.memory.pick(service)
        return backend.instance_id if backend is not None else None

    async def begin_slow(self, service: str, name: str) -> None:
        self.services[name] = service
        self.memory.set_in_flight(service, name, 1)

    async def end_slow(self, name: str) -> None:
        self.memory.set_in_flight(self.services[name], name, 0)

    async def close(self) -> None:
        await self.memory.close()


@pytest.fixture(params=["embedded", "memory"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    made: EmbeddedHarness | MemoryHarness
    made = EmbeddedHarness() if request.param == "embedded" else MemoryHarness()
    try:
        yield made  # both must satisfy Harness, hence their routers the Router protocol
    finally:
        await made.close()


@contextlib.asynccontextmanager
async def route(harness: Harness, *backends: Backend) -> AsyncIterator[str]:
    await harness.router.open_route("web", "127.0.0.1", 0, hold_timeout=0.1)
    await harness.router.set_backends("web", list(backends))
    yield "web"


async def test_open_route_is_idempotent_and_listed(harness: Harness) -> None:
    router = harness.router
    await router.open_route("web", "127.0.0.1", 0)
    port = router.routes()["web"]
    await router.open_route("web", "127.0.0.1", port)
    assert router.routes() == {"web": port}
    await router.close_route("web")
    assert router.routes() == {}


async def test_a_port_serves_one_route(harness: Harness) -> None:
    router = harness.router
    await router.open_route("web", "127.0.0.1", 0)
    port = router.routes()["web"]
    with pytest.raises(PortInUseError, match=str(port)):
        await router.open_route("api", "127.0.0.1", port)
    assert list(router.routes()) == ["web"]


async def test_traffic_follows_weights(harness: Harness) -> None:
    a, b, c = [await harness.backend(name) for name in "abc"]
    async with route(harness, a, b, c) as service:
        assert Counter([await harness.hit(service) for _ in range(30)]) == {
            "a": 10,
            "b": 10,
            "c": 10,
        }
        await harness.router.set_backends(
            service, [await harness.backend("d", "r2", 90), await harness.backend("e", "r3", 10)]
        )
        assert Counter([await harness.hit(service) for _ in range(100)]) == {"d": 90, "e": 10}


async def test_a_backend_out_of_the_set_gets_no_new_request(harness: Harness) -> None:
    a, b = await harness.backend("a"), await harness.backend("b")
    async with route(harness, a, b) as service:
        await harness.router.set_backends(service, [b])
        assert {await harness.hit(service) for _ in range(10)} == {"b"}
        await harness.router.set_backends(service, [])
        assert await harness.hit(service) is None  # held, then refused: nothing routed


async def test_drain_returns_at_once_when_nothing_is_in_flight(harness: Harness) -> None:
    a, b = await harness.backend("a"), await harness.backend("b")
    async with route(harness, a, b) as service:
        await harness.hit(service)
        assert await harness.router.drain(service, ["a"], timeout=10) == 0
        assert {await harness.hit(service) for _ in range(4)} == {"b"}


async def test_drain_waits_for_in_flight_requests(harness: Harness) -> None:
    a = await harness.backend("a")
    async with route(harness, a) as service:
        await harness.begin_slow(service, "a")
        assert await harness.router.drain(service, ["a"], timeout=0.05) == 1
        assert harness.router.stats(service).by_release["r1"].in_flight == 1
        drain = asyncio.create_task(harness.router.drain(service, ["a"], timeout=10))
        await asyncio.sleep(0.05)
        assert not drain.done()
        await harness.end_slow("a")
        assert await drain == 0
        assert harness.router.stats(service).by_release["r1"].in_flight == 0


async def test_stats_count_requests_per_release(harness: Harness) -> None:
    a, b = await harness.backend("a", "r1"), await harness.backend("b", "r2")
    async with route(harness, a, b) as service:
        for _ in range(6):
            await harness.hit(service)
        await harness.router.set_backends(service, [])
        await harness.hit(service)
        stats = harness.router.stats(service)
    assert (stats.service, stats.requests, stats.router_errors) == ("web", 7, 1)
    assert {label: s.requests for label, s in stats.by_release.items()} == {"r1": 3, "r2": 3}
    assert sum(stats.by_release["r1"].latency_buckets) == 3


async def test_impossible_routed_sets_and_unknown_services_are_refused(harness: Harness) -> None:
    a = await harness.backend("a")
    async with route(harness, a) as service:
        with pytest.raises(ValueError, match="twice"):
            await harness.router.set_backends(service, [a, a])
        with pytest.raises(ValueError, match="weight"):
            await harness.router.set_backends(service, [Backend("x", "r1", "127.0.0.1", 1, -1)])
        assert await harness.hit(service) == "a"  # the routed set is unchanged
    with pytest.raises(UsageError, match="no route"):
        harness.router.stats("nope")
