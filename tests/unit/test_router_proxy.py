"""EmbeddedRouter over real sockets: real HTTP/1.1 between clients, router and apps.

Every scenario runs on both event loops the agent may use (the default one and uvloop).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from corral.errors import PortInUseError
from corral.router.protocol import Backend
from corral.router.proxy import EmbeddedRouter, ProxySettings
from tests.unit.test_router_support import (
    LOOPS,
    AppServer,
    RawClient,
    apps,
    eventually,
    pattern,
    refusing_port,
    run,
)

pytestmark = pytest.mark.parametrize("loop", list(LOOPS))

FAST = ProxySettings(hold_timeout=2.0)


@contextlib.asynccontextmanager
async def routed(
    backends: list[Backend],
    settings: ProxySettings = FAST,
    *,
    hold_timeout: float | None = None,
    ejections: list[tuple[str, str, str]] | None = None,
) -> AsyncIterator[tuple[EmbeddedRouter, httpx.AsyncClient]]:
    """A router with route `web` on a free port, routed to `backends`, and a client for it."""
    router = EmbeddedRouter(
        settings,
        on_eject=(lambda *event: ejections.append(event)) if ejections is not None else None,
    )
    try:
        await router.open_route("web", "127.0.0.1", 0, hold_timeout=hold_timeout)
        await router.set_backends("web", backends)
        port = router.routes()["web"]
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=20
        ) as client:
            yield router, client
    finally:
        await router.close()


def served_by(app: AppServer) -> int:
    return len(app.requests)


# -- load balancing -------------------------------------------------------------------------


def test_requests_are_spread_by_weight(loop: str) -> None:
    async def scenario() -> None:
        async with (
            apps("a", "b", "c") as (a, b, c),
            routed([a.backend(), b.backend(), c.backend()]) as (router, client),
        ):
            bodies = [(await client.get("/who")).text for _ in range(300)]
            assert Counter(bodies) == {"a": 100, "b": 100, "c": 100}
            await router.set_backends("web", [a.backend("r1", 90), b.backend("r2", 10)])
            bodies = [(await client.get("/who")).text for _ in range(200)]
            assert Counter(bodies) == {"a": 180, "b": 20}

    run(loop, scenario)


# -- HTTP/1.1 relaying ----------------------------------------------------------------------


def test_keep_alive_client_connection_serves_many_requests(loop: str) -> None:
    async def scenario() -> None:
        async with apps("a") as (a,), routed([a.backend()]) as (router, _):
            client = await RawClient.open(router.routes()["web"])
            try:
                for i in range(50):
                    reply = await client.request("GET", f"/echo?{i}", body=b"%d" % i)
                    assert (reply.status, reply.body) == (200, b"%d" % i)
                # pipelined: three requests in one write, answered in order
                client.send_raw(
                    b"".join(
                        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\np%d" % i
                        for i in range(3)
                    )
                )
                assert [(await client.reply()).body for _ in range(3)] == [b"p0", b"p1", b"p2"]
            finally:
                await client.close()
            # the router kept its connection to the app alive, too
            assert len({seen.connection for seen in a.requests}) == 1

    run(loop, scenario)


def test_request_bodies_arrive_intact(loop: str) -> None:
    async def scenario() -> None:
        data = os.urandom(300_000)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 70_000):
                yield data[start : start + 70_000]

        async with apps("a") as (a,), routed([a.backend()]) as (_, client):
            sized = await client.post("/echo", content=data)
            chunked = await client.post("/echo", content=chunks())
            assert sized.content == data
            assert chunked.content == data
            assert a.requests[-1].headers.get("transfer-encoding") == "chunked"

    run(loop, scenario)


def test_large_streamed_response_arrives_intact(loop: str) -> None:
    async def scenario() -> None:
        size = 8 * 1024 * 1024
        async with apps("a") as (a,), routed([a.backend()]) as (_, client):
            async with client.stream("GET", f"/big?n={size}") as response:
                received = b"".join([piece async for piece in response.aiter_raw()])
            assert response.status_code == 200
            assert received == pattern(size)

    run(loop, scenario)


def test_head_204_and_304_have_no_body_and_the_connection_stays_usable(loop: str) -> None:
    async def scenario() -> None:
        async with apps("a") as (a,), routed([a.backend()]) as (router, _):
            client = await RawClient.open(router.routes()["web"])
            try:
                head = await client.request("HEAD", "/who")
                assert (head.status, head.headers["content-length"], head.body) == (200, "1", b"")
                assert (await client.request("GET", "/status/204")).status == 204
                assert (await client.request("GET", "/status/304")).status == 304
                assert (await client.request("GET", "/who")).body == b"a"
            finally:
                await client.close()

    run(loop, scenario)


def test_hop_by_hop_headers_are_dropped_and_x_forwarded_for_added(loop: str) -> None:
    async def scenario() -> None:
        async with apps("a") as (a,), routed([a.backend()]) as (router, _):
            client = await RawClient.open(router.routes()["web"])
            try:
                reply = await client.request(
                    "GET",
                    "/headers",
                    [
                        ("connection", "keep-alive, x-private"),
                        ("keep-alive", "timeout=5"),
                        ("te", "trailers"),
                        ("x-private", "for the router only"),
                        ("x-forwarded-for", "10.1.2.3"),
                        ("x-kept", "yes"),
                    ],
                )
            finally:
                await client.close()
            seen = a.requests[-1].headers
            assert seen["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
            assert seen["x-kept"] == "yes"
            for dropped in ("keep-alive", "te", "x-private", "connection"):
                assert dropped not in seen
            assert "connection" not in reply.headers and "keep-alive" not in reply.headers

    run(loop, scenario)


def test_connection_close_is_respected_both_ways(loop: str) -> None:
    async def scenario() -> None:
        async with apps("a") as (a,), routed([a.backend()]) as (router, _):
            port = router.routes()["web"]
            # the app closes: the client connection stays open, the next request works
            client = await RawClient.open(port)
            try:
                assert (await client.request("GET", "/close")).status == 200
                assert (await client.request("GET", "/who")).body == b"a"
            finally:
                await client.close()
            assert len({seen.connection for seen in a.requests[-2:]}) == 2
            # the client closes: answered with Connection: close, then the router hangs up
            client = await RawClient.open(port)
            try:
                reply = await client.request("GET", "/who", [("connection", "close")])
                assert reply.headers["connection"] == "close"
                assert await client.at_eof()
            finally:
                await client.close()
            # HTTP/1.0 closes by default
            client = await RawClient.open(port)
            try:
                client.send_raw(b"GET /who HTTP/1.0\r\n\r\n")
                assert (await client.reply()).body == b"a"
                assert await client.at_eof()
            finally:
                await client.close()
            # a body delimited by the backend's close reaches the client whole
            client = await RawClient.open(port)
            try:
                reply = await client.request("GET", "/nolength")
                assert reply.body == b"aaa"
            finally:
                await client.close()

    run(loop, scenario)


# -- changing the routed set ----------------------------------------------------------------


def test_backend_removed_from_the_set_gets_no_new_request(loop: str) -> None:
    async def scenario() -> None:
        async with (
            apps("a", "b", "c") as (a, b, c),
            routed([a.backend(), b.backend(), c.backend()]) as (router, client),
        ):
            for _ in range(30):
                await client.get("/who")
            assert c.open_connections == 1  # pooled by the router
            await router.set_backends("web", [a.backend(), b.backend()])
            before = served_by(c)
            for _ in range(30):
                assert (await client.get("/who")).text in ("a", "b")
            assert served_by(c) == before
            await eventually(lambda: c.open_connections == 0)  # its idle pool is closed

    run(loop, scenario)


def test_drain_waits_for_the_in_flight_request(loop: str) -> None:
    async def scenario() -> None:
        async with apps("a", "b") as (a, b), routed([a.backend()]) as (router, client):
            slow = asyncio.create_task(client.get("/slow"))
            await a.started.wait()
            await router.set_backends("web", [a.backend(), b.backend()])
            drain = asyncio.create_task(router.drain("web", ["a"], timeout=10))
            await asyncio.sleep(0.05)
            assert not drain.done()
            # traffic goes on meanwhile, to the remaining backend only
            assert [(await client.get("/who")).text for _ in range(4)] == ["b"] * 4
            a.gate.set()
            assert await drain == 0
            response = await slow
            assert (response.status_code, response.text) == (200, "a")
            assert router.stats("web").by_release["r1"].in_flight == 0

    run(loop, scenario)


def test_drain_timeout_reports_requests_still_in_flight(loop: str) -> None:
    async def scenario() -> None:
        async with apps("a") as (a,), routed([a.backend()]) as (router, client):
            slow = asyncio.create_task(client.get("/slow"))
            await a.started.wait()
            assert await router.drain("web", ["a"], timeout=0.1) == 1
            a.gate.set()
            assert (await slow).status_code == 200  # not cut by the drain

    run(loop, scenario)


def test_no_request_fails_while_backends_are_swapped_under_load(loop: str) -> None:
    async def scenario() -> None:
        connections, per_connection, swaps = 20, 100, 10
        total = connections * per_connection
        done = 0
        statuses: Counter[int] = Counter()

        async def load(port: int) -> None:
            nonlocal done
            client = await RawClient.open(port)
            try:
                for _ in range(per_connection):
                    statuses[(await client.request("GET", "/who")).status] += 1
                    done += 1
            finally:
                await client.close()

        async def progress(at_least: int) -> None:
            await eventually(lambda: done >= at_least, 30)

        generation = [await AppServer("g0-a").start(), await AppServer("g0-b").start()]
        retired: list[AppServer] = []
        try:
            async with routed([app.backend() for app in generation]) as (router, _):
                port = router.routes()["web"]
                clients = [asyncio.create_task(load(port)) for _ in range(connections)]
                for swap in range(1, swaps + 1):
                    await progress(swap * total // (swaps + 2))  # swap while load runs
                    fresh = [await AppServer(f"g{swap}-{x}").start() for x in "ab"]
                    old, generation = generation, fresh
                    await router.set_backends("web", [app.backend() for app in fresh])
                    assert await router.drain("web", [app.name for app in old], timeout=10) == 0
                    for app in old:
                        await app.close()  # only once drained (law 6)
                        retired.append(app)
                await asyncio.gather(*clients)
                stats = router.stats("web")
        finally:
            for app in generation + retired:
                await app.close()
        assert statuses == {200: total}
        assert (stats.requests, stats.router_errors) == (total, 0)
        assert sum(1 for app in retired if app.requests) == 2 * swaps

    run(loop, scenario)


# -- failures -------------------------------------------------------------------------------


def test_refusing_backend_is_ejected_and_get_retried_elsewhere(loop: str) -> None:
    async def scenario() -> None:
        ejections: list[tuple[str, str, str]] = []
        with refusing_port() as dead_port:
            dead = Backend("dead", "r1", "127.0.0.1", dead_port)
            async with (
                apps("a") as (a,),
                routed([dead, a.backend()], ejections=ejections) as (router, client),
            ):
                replies = [await client.get("/who") for _ in range(4)]
                assert [(r.status_code, r.text) for r in replies] == [(200, "a")] * 4
                stats = router.stats("web")
                assert stats.ejected == {"dead"}
                assert (stats.retries, stats.router_errors) == (1, 0)
                # listing it again does not bring it back: only a set without it does
                await router.set_backends("web", [dead, a.backend()])
                assert router.stats("web").ejected == {"dead"}
        assert [(service, iid) for service, iid, _ in ejections] == [("web", "dead")]
        assert "refused" in ejections[0][2]

    run(loop, scenario)


def test_post_to_a_refusing_backend_is_not_retried(loop: str) -> None:
    async def scenario() -> None:
        with refusing_port() as dead_port:
            dead = Backend("dead", "r0", "127.0.0.1", dead_port)
            async with apps("a") as (a,), routed([dead, a.backend()]) as (router, client):
                failed = await client.post("/echo", content=b"once")
                assert failed.status_code == 502
                assert (await client.post("/echo", content=b"again")).text == "again"
                stats = router.stats("web")
                assert (stats.retries, stats.router_errors) == (0, 1)
                assert stats.by_release["r0"].router_errors == 1
                assert [seen.body for seen in a.requests] == [b"again"]

    run(loop, scenario)


def test_pooled_connection_reset_before_answer_ejects_and_retries(loop: str) -> None:
    async def scenario() -> None:
        async with apps("a", "b") as (a, b), routed([a.backend(), b.backend()]) as (router, client):
            assert [(await client.get("/who")).text for _ in range(2)] == ["a", "b"]
            a.drop = True  # a takes the next request on its pooled connection and hangs up
            reply = await client.get("/who")
            assert (reply.status_code, reply.text) == (200, "b")
            assert router.stats("web").ejected == {"a"}
            assert router.readmit("web", "a")
            assert router.stats("web").ejected == set()

    run(loop, scenario)


def test_stale_pooled_connection_is_retried_transparently(loop: str) -> None:
    async def scenario() -> None:
        async with apps("a") as (a,), routed([a.backend()]) as (router, client):
            a.close_after_response = True  # as if its keep-alive timeout hit after each answer
            for _ in range(3):
                assert (await client.get("/who")).text == "a"
                await eventually(lambda: a.open_connections == 0)
                await asyncio.sleep(0.05)  # the close reaches the router before the next request
            stats = router.stats("web")
            assert (stats.ejected, stats.retries, stats.router_errors) == (set(), 0, 0)

    run(loop, scenario)


def test_request_is_held_until_a_backend_appears(loop: str) -> None:
    async def scenario() -> None:
        async with apps("a") as (a,), routed([], hold_timeout=5) as (router, client):
            pending = asyncio.create_task(client.get("/who"))
            await asyncio.sleep(0.1)
            assert not pending.done()
            await router.set_backends("web", [a.backend()])
            assert (await pending).text == "a"
            assert router.stats("web").router_errors == 0

    run(loop, scenario)


def test_503_when_no_backend_appears_within_hold_timeout(loop: str) -> None:
    async def scenario() -> None:
        async with routed([], hold_timeout=0.2) as (router, client):
            response = await client.get("/who")
            assert response.status_code == 503
            assert "no ready backend" in response.text
            stats = router.stats("web")
            assert (stats.requests, stats.router_errors, stats.by_release) == (1, 1, {})

    run(loop, scenario)


def test_504_when_the_backend_does_not_answer_in_time(loop: str) -> None:
    async def scenario() -> None:
        async with (
            apps("a") as (a,),
            routed([a.backend()], ProxySettings(backend_timeout=0.2)) as (
                router,
                client,
            ),
        ):
            assert (await client.get("/slow")).status_code == 504
            stats = router.stats("web")
            assert (stats.router_errors, stats.by_release["r1"].router_errors) == (1, 1)
            assert stats.ejected == set()  # slow is not dead

    run(loop, scenario)


def test_backend_that_does_not_accept_in_time_is_ejected(loop: str) -> None:
    async def scenario() -> None:
        # a listener whose accept queue is full: the kernel drops further SYNs
        stuck = socket.socket()
        stuck.bind(("127.0.0.1", 0))
        stuck.listen(0)
        fillers: list[socket.socket] = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", stuck.getsockname()[1]))
                fillers.append(filler)
            await asyncio.sleep(0.05)
            slow = Backend("stuck", "r1", "127.0.0.1", stuck.getsockname()[1])
            settings = ProxySettings(connect_timeout=0.2)
            async with apps("a") as (a,), routed([slow, a.backend()], settings) as (router, client):
                assert (await client.get("/who")).text == "a"
                assert router.stats("web").ejected == {"stuck"}
        finally:
            for sock in [*fillers, stuck]:
                sock.close()

    run(loop, scenario)


# -- listening ------------------------------------------------------------------------------


def test_port_in_use_is_refused_with_the_port_named(loop: str) -> None:
    async def scenario() -> None:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        router = EmbeddedRouter()
        try:
            with pytest.raises(PortInUseError, match=str(port)) as error:
                await router.open_route("web", "127.0.0.1", port)
            assert "another route port" in str(error.value)
            assert router.routes() == {}
        finally:
            taken.close()
            await router.close()

    run(loop, scenario)


def test_inherited_listening_socket_is_served_without_a_refused_connection(loop: str) -> None:
    async def scenario() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        async with apps("a") as (a,):
            first, second = EmbeddedRouter(), EmbeddedRouter()
            try:
                await first.open_route("web", "127.0.0.1", port, sock=sock)
                await first.set_backends("web", [a.backend()])
                assert first.listening_socket("web") is sock
                # restart: the next router gets a copy of the fd, serves, the first one leaves
                handed = socket.socket(fileno=os.dup(first.listening_socket("web").fileno()))
                await second.open_route("web", "127.0.0.1", port, sock=handed)
                await second.set_backends("web", [a.backend()])
                async with httpx.AsyncClient(trust_env=False) as client:
                    url = f"http://127.0.0.1:{port}/who"
                    assert (await client.get(url)).text == "a"
                    await first.close()
                    for _ in range(5):
                        assert (await client.get(url, headers={"connection": "close"})).text == "a"
                assert second.routes() == {"web": port}
            finally:
                await first.close()
                await second.close()

    run(loop, scenario)


# -- stats ----------------------------------------------------------------------------------


def test_stats_count_requests_and_errors_per_release(loop: str) -> None:
    async def scenario() -> None:
        with refusing_port() as dead_port:
            async with apps("a1", "a2", "b1") as (a1, a2, b1):
                backends = [a1.backend("r1"), a2.backend("r1"), b1.backend("r2")]
                async with routed(backends, hold_timeout=0.1) as (router, client):
                    for _ in range(30):
                        assert (await client.get("/who")).status_code == 200
                    assert (await client.get("/status/503")).status_code == 503  # to a1
                    await router.set_backends("web", [Backend("d", "r3", "127.0.0.1", dead_port)])
                    assert (await client.post("/echo", content=b"x")).status_code == 502
                    assert (await client.get("/who")).status_code == 503  # all ejected: held
                    stats = router.stats("web")
        assert (stats.requests, stats.router_errors, stats.retries) == (33, 2, 0)
        r1, r2, r3 = (stats.by_release[label] for label in ("r1", "r2", "r3"))
        assert (r1.requests, r1.responses_5xx, r1.router_errors) == (21, 1, 0)
        assert (r2.requests, r2.responses_5xx, r2.router_errors) == (10, 0, 0)
        assert (r3.requests, r3.router_errors) == (1, 1)
        assert sum(r1.latency_buckets) == 21 and sum(r2.latency_buckets) == 10
        assert r1.in_flight == r2.in_flight == r3.in_flight == 0

    run(loop, scenario)


def test_idle_and_half_sent_client_connections_are_closed(loop: str) -> None:
    async def scenario() -> None:
        settings = ProxySettings(client_idle_timeout=0.2, header_timeout=0.2)
        async with apps("a") as (a,), routed([a.backend()], settings) as (router, _):
            port = router.routes()["web"]
            idle, half = await RawClient.open(port), await RawClient.open(port)
            try:
                assert (await idle.request("GET", "/who")).body == b"a"
                half.send_raw(b"GET /who HTTP/1.1\r\nHost: t\r\n")  # and nothing more
                assert await idle.at_eof()
                assert await half.at_eof()
            finally:
                await idle.close()
                await half.close()

    run(loop, scenario)


def test_closing_the_router_cuts_its_requests_without_ejecting_anyone(loop: str) -> None:
    async def scenario() -> None:
        ejections: list[tuple[str, str, str]] = []
        async with (
            apps("a") as (a,),
            routed([a.backend()], ejections=ejections) as (router, client),
        ):
            await router.open_route("api", "127.0.0.1", 0, hold_timeout=30)
            api = f"http://127.0.0.1:{router.routes()['api']}/who"
            in_flight = asyncio.create_task(client.get("/slow"))
            held = asyncio.create_task(client.get(api))
            await a.started.wait()
            await asyncio.sleep(0.05)
            await router.close()
            for request in (in_flight, held):
                with pytest.raises(httpx.TransportError):
                    await request
            assert router.routes() == {}
        assert ejections == []

    run(loop, scenario)


def test_malformed_chunked_body_cuts_the_connection(loop: str) -> None:
    async def scenario() -> None:
        async with apps("a") as (a,), routed([a.backend()]) as (router, _):
            client = await RawClient.open(router.routes()["web"])
            try:
                client.send_raw(
                    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\nZZ not a chunk size\r\n"
                )
                assert await client.at_eof()
            finally:
                await client.close()
            # a request head that is not HTTP gets a 400
            client = await RawClient.open(router.routes()["web"])
            try:
                client.send_raw(b"BLAH\x00 / HTTP/1.1\r\n\r\n")
                assert (await client.reply()).status == 400
            finally:
                await client.close()
            assert router.stats("web").router_errors == 0

    run(loop, scenario)
