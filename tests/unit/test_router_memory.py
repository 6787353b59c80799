"""What InMemoryRouter adds for roll-out logic tests, and the balancer they share."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter

import pytest

from corral.errors import PortInUseError, UsageError
from corral.router.balancer import SmoothWeighted
from corral.router.memory import InMemoryRouter
from corral.router.protocol import Backend


def backend(name: str, release: str = "r1", weight: int = 1) -> Backend:
    return Backend(name, release, "127.0.0.1", 9000, weight)


@pytest.mark.parametrize(
    ("weights", "picks"),
    [
        ({"a": 1, "b": 1, "c": 1}, 300),
        ({"a": 90, "b": 10}, 1000),
        ({"a": 5, "b": 1, "c": 1}, 70),
        ({"a": 3, "b": 0}, 30),
        ({"a": 10_000, "b": 7_919}, 17_919),  # too long a cycle to precompute
    ],
)
def test_smooth_weighted_round_robin_is_exact_over_a_cycle(
    weights: dict[str, int], picks: int
) -> None:
    balancer = SmoothWeighted(list(weights.items()))
    counts = Counter(balancer.pick() for _ in range(picks))
    total = sum(weights.values())
    assert counts == {k: w * picks // total for k, w in weights.items() if w}


def test_smooth_weighted_interleaves_instead_of_bursting() -> None:
    balancer = SmoothWeighted([("a", 5), ("b", 1), ("c", 1)])
    assert "".join(str(balancer.pick()) for _ in range(7)) == "aabacaa"
    assert SmoothWeighted([("a", 0)]).pick() is None


async def test_records_routed_sets_drains_and_ejections() -> None:
    ejected: list[tuple[str, str, str]] = []
    router = InMemoryRouter(on_eject=lambda *event: ejected.append(event))
    await router.open_route("web", "127.0.0.1", 8080)
    await router.set_backends("web", [backend("a"), backend("b", "r2", 3)])
    router.eject("web", "a")
    assert router.routed("web") == [backend("b", "r2", 3)]
    assert router.stats("web").ejected == {"a"}
    assert {router.pick("web") for _ in range(3)} == {backend("b", "r2", 3)}
    await router.set_backends("web", [backend("a"), backend("b", "r2", 3)])
    assert router.stats("web").ejected == {"a"}  # sticks while listed
    assert router.readmit("web", "a")
    await router.drain("web", ["b"], timeout=1)
    assert [event[0] for event in router.history] == [
        "open_route",
        "set_backends",
        "eject",
        "set_backends",
        "drain",
        "set_backends",
    ]
    assert router.history[-1][2] == [backend("a")]
    assert ejected == [("web", "a", "connection refused")]


async def test_pick_counts_statuses_for_analysis() -> None:
    router = InMemoryRouter()
    await router.open_route("web", "127.0.0.1", 0)
    await router.set_backends("web", [backend("a", "r1", 9), backend("b", "r2", 1)])
    for _ in range(10):
        router.pick("web", status=500 if router.routed("web") else 200)
    by_release = router.stats("web").by_release
    assert (by_release["r1"].requests, by_release["r1"].responses_5xx) == (9, 9)
    assert (by_release["r2"].requests, by_release["r2"].responses_5xx) == (1, 1)


async def test_taken_ports_are_refused() -> None:
    router = InMemoryRouter(taken_ports={8080})
    with pytest.raises(PortInUseError, match="8080"):
        await router.open_route("web", "127.0.0.1", 8080)


async def test_drain_ends_when_in_flight_requests_end() -> None:
    router = InMemoryRouter()
    await router.open_route("web", "127.0.0.1", 0)
    await router.set_backends("web", [backend("a")])
    router.set_in_flight("web", "a", 2)
    drain = asyncio.create_task(router.drain("web", ["a"], timeout=10))
    await asyncio.sleep(0)
    assert not drain.done() and router.routed("web") == []
    router.set_in_flight("web", "a", 0)
    assert await drain == 0


async def test_listening_socket_is_the_one_given_at_open() -> None:
    router = InMemoryRouter()
    await router.open_route("web", "127.0.0.1", 0)
    with pytest.raises(UsageError, match="no listening socket"):
        router.listening_socket("web")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        await router.open_route("api", "127.0.0.1", 0, sock=sock)
        assert router.listening_socket("api") is sock
        assert router.routes()["api"] == sock.getsockname()[1]
