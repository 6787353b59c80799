"""A team sharing one PostgreSQL state: the lock seen from other processes (other machines,
as far as the store can tell), a dead holder taken over by its lease, an unreachable server."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
from dataclasses import asdict
from typing import Any

import pytest

from corral.errors import LockedError, StateError, UsageError
from corral.state.sql import SqlStateStore
from tests.conformance.test_state_store import holder

TTL = 300.0


def _hold_the_lock(url: str, held: Any) -> None:
    """Another machine's apply: take the lock, say so, then hang until killed."""
    store = SqlStateStore(url, "shop/prod")
    info = store.acquire_lock(
        holder(
            "laptop-of-alice",
            user="alice",
            host="alice-laptop",
            pid=os.getpid(),
            command="corral apply -m 'ship r7'",
            message="ship r7",
        ),
        ttl=TTL,
    )
    held.put(asdict(info))
    time.sleep(120)  # bounded: the test kills this process long before


@pytest.fixture
def other_machine(pg_url: str) -> Any:
    """A process holding the lock of shop/prod in `pg_url`; killed (-9) after the test."""
    ctx = multiprocessing.get_context("spawn")
    held = ctx.Queue()
    proc = ctx.Process(target=_hold_the_lock, args=(pg_url, held))
    proc.start()
    try:
        yield proc, held.get(timeout=60)
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=10)
        held.close()


def test_a_lock_held_by_another_process_is_refused_naming_its_holder(
    pg_url: str, other_machine: Any
) -> None:
    _, held = other_machine
    store = SqlStateStore(pg_url, "shop/prod")
    try:
        with pytest.raises(LockedError) as caught:
            store.acquire_lock(holder("bob-desk", user="bob", host="bob-desk"), ttl=TTL)
        message = str(caught.value)
        assert "alice@alice-laptop" in message
        assert "corral apply -m 'ship r7'" in message and "(ship r7)" in message
        assert f"since {time.strftime('%H:%M:%S', time.localtime(held['since']))}" in message
        assert caught.value.exit_code == 3
        assert caught.value.holder == held
        # another environment in the same database is not locked by it
        staging = SqlStateStore(pg_url, "shop/staging")
        try:
            assert staging.acquire_lock(holder("bob-desk"), ttl=TTL).holder_id == "bob-desk"
        finally:
            staging.close()
    finally:
        store.close()


def test_a_dead_holder_is_taken_over_once_its_lease_runs_out(
    pg_url: str, other_machine: Any
) -> None:
    proc, held = other_machine
    os.kill(proc.pid, signal.SIGKILL)  # the holder dies without releasing
    proc.join(timeout=10)
    before = SqlStateStore(pg_url, "shop/prod")
    later = SqlStateStore(pg_url, "shop/prod", clock=lambda: held["expires_at"] + 1)
    try:
        with pytest.raises(LockedError, match="alice@alice-laptop"):
            before.acquire_lock(holder("bob-desk", user="bob"), ttl=TTL)  # lease still runs

        taken = later.acquire_lock(holder("bob-desk", user="bob"), ttl=TTL)

        assert (taken.holder_id, taken.user) == ("bob-desk", "bob")
        [event] = later.list_events()
        assert event.kind == "lock.taken_over"
        assert event.data["previous"] == held
    finally:
        before.close()
        later.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when this returns


def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    port = _closed_port()
    url = f"postgresql://corral:s3cret-pw@127.0.0.1:{port}/team"

    with pytest.raises(StateError) as caught:
        SqlStateStore(url, "shop/prod")

    message = str(caught.value)
    assert f"postgresql://corral:***@127.0.0.1:{port}/team" in message
    assert "s3cret-pw" not in message
    assert "Check that the PostgreSQL server" in message and "Nothing was written" in message
    assert caught.value.exit_code == 1


def test_a_url_that_does_not_parse_is_refused_without_echoing_it() -> None:
    with pytest.raises(UsageError, match="invalid state URL") as caught:
        SqlStateStore("postgresql://corral:s3cret-pw@db:notaport/team")
    assert "s3cret-pw" not in str(caught.value)
