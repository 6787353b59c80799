"""Health probes against real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket

from corral.releases import release_config
from corral.rollout.health import HealthCheck, probe
from corral.spec.model import ServiceSpec


async def test_tcp_probe_passes_on_an_accepting_port_and_fails_on_a_closed_one() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await probe(f"127.0.0.1:{port}", HealthCheck(tcp=True, timeout=1))).ok
    finally:
        server.close()
        await server.wait_closed()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    result = await probe(f"127.0.0.1:{closed}", HealthCheck(tcp=True, timeout=1))
    assert not result.ok and str(closed) in result.detail


def test_adding_the_tcp_field_keeps_existing_release_hashes() -> None:
    """Releases made before `tcp` existed keep their config (and hash) exactly."""
    config = release_config(ServiceSpec(image="app"))
    assert "tcp" not in config["health"]
    assert (
        release_config(ServiceSpec.model_validate({"image": "app", "health": {"tcp": True}}))[
            "health"
        ]["tcp"]
        is True
    )
