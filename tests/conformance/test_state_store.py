"""The `StateStore` conformance suite: every store passes it (in-memory, SQLite, PostgreSQL).

The shared part runs once per store; the database part (SQLite and PostgreSQL) checks what
only a real database can break: several processes at once, reopening; then SQLite's file.
PostgreSQL runs in one cluster per session, a database per test (`pg_fixtures.py`).
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from corral.errors import LockedError, StateError, UsageError
from corral.state import migrations
from corral.state.memory import InMemoryStateStore, MemoryBackend
from corral.state.open import open_state
from corral.state.protocol import StateStore
from corral.state.records import (
    AgentRecord,
    ApplyRecord,
    ApplyStatus,
    InstanceRecord,
    InstanceState,
    LockInfo,
    ServiceRecord,
)
from corral.state.sql import SqlStateStore

T0 = 1_800_000_000.0  # a fixed instant, far from midnight in every time zone


class StateClock:
    """A clock the test moves by hand, so that lease expiry needs no sleep."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class StateKit:
    """Opens stores of one kind on one shared backend (one database), for any environment."""

    clock: StateClock
    factory: Callable[[str], StateStore]
    opened: list[StateStore] = field(default_factory=list)

    def open(self, env: str = "dev") -> StateStore:
        store = self.factory(env)
        self.opened.append(store)
        return store


def database_url(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> str:
    """A fresh, empty database of `kind` (sqlite or postgresql) for this test."""
    if kind == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'deep' / 'er' / 'state.db'}"


def raw_execute(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Run `sql` on the database behind the store's back; its rows, if any."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
            rows = raw.execute(sql).fetchall()
        raw.close()
        return rows
    with psycopg.connect(url) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def state_kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateKit]:
    clock = StateClock()
    if request.param == "memory":
        backend = MemoryBackend()
        kit = StateKit(clock, lambda env: InMemoryStateStore(env, shared=backend, clock=clock))
    else:
        url = database_url(request, request.param, tmp_path)
        kit = StateKit(clock, lambda env: SqlStateStore(url, env, clock=clock))
    try:
        yield kit
    finally:
        for store in kit.opened:
            store.close()


@pytest.fixture
def state_store(state_kit: StateKit) -> StateStore:
    return state_kit.open("dev")


def holder(name: str = "h1", **changes: Any) -> LockInfo:
    info = LockInfo(
        holder_id=name,
        user="alice",
        host="build-1",
        pid=4242,
        command="corral apply",
        message="ship r2",
        operation="apply",
    )
    return replace(info, **changes)


def instance(store: StateStore, service: str, serial: int, release: int, **kw: Any) -> str:
    """Record a new instance of `release` (created on the fly) and return its id."""
    store.get_or_create_release(service, f"sha256:img{release}", f"sha256:cfg{release}", {}, "t")
    instance_id = store.new_instance_id(service)
    state = kw.pop("state", InstanceState.RUNNING)
    store.put_instance(InstanceRecord(instance_id, service, serial, release, state, **kw))
    return instance_id


# --- releases (law 3) --------------------------------------------------------------------


def test_releases_are_numbered_per_service(state_store: StateStore) -> None:
    web1 = state_store.get_or_create_release("web", "sha256:a", "sha256:x", {"port": 80}, "alice")
    web2 = state_store.get_or_create_release("web", "sha256:b", "sha256:x", {"port": 80}, "alice")
    api1 = state_store.get_or_create_release("api", "sha256:a", "sha256:x", {"port": 80}, "bob")

    assert (web1.name, web2.name, api1.name) == ("r1", "r2", "r1")
    assert (api1.service, api1.created_by) == ("api", "bob")


def test_the_same_key_is_the_same_release(state_kit: StateKit) -> None:
    store = state_kit.open()
    first = store.get_or_create_release("web", "sha256:a", "sha256:x", {"v": 1}, "alice")
    state_kit.clock.now += 60

    again = store.get_or_create_release("web", "sha256:a", "sha256:x", {"v": 2}, "bob")
    other_config = store.get_or_create_release("web", "sha256:a", "sha256:y", {"v": 1}, "bob")

    assert again == first  # number, config, creator and time of the first creation
    assert other_config.number == 2


def test_a_release_is_never_edited(state_store: StateStore) -> None:
    config: dict[str, Any] = {"env": {"A": "1"}, "command": ("serve", "--fast")}
    created = state_store.get_or_create_release("web", "sha256:a", "sha256:x", config, "alice")
    config["env"]["A"] = "changed by the caller"
    created.config["env"]["A"] = "changed through the returned record"
    state_store.get_or_create_release("web", "sha256:b", "sha256:x", {}, "alice")

    stored = state_store.get_release("web", 1)
    assert stored is not None
    assert stored.config == {"env": {"A": "1"}, "command": ["serve", "--fast"]}
    assert [r.image_digest for r in state_store.list_releases("web")] == ["sha256:a", "sha256:b"]
    assert state_store.get_release("web", 3) is None
    assert state_store.list_releases("api") == []


def test_the_releases_in_use_are_read_for_all_services_at_once(state_kit: StateKit) -> None:
    store = state_kit.open("dev")
    instance(store, "web", serial=1, release=1, state=InstanceState.STOPPED)  # r1: gone
    instance(store, "web", serial=1, release=2)  # r2: running
    instance(store, "web", serial=2, release=3, state=InstanceState.STOPPING)  # r3: live
    store.get_or_create_release("web", "sha256:img4", "sha256:cfg4", {"port": 8}, "t")
    store.put_service(ServiceRecord("web", 4, 2, None))  # r4: current, nothing runs it yet
    store.get_or_create_release("api", "sha256:a1", "sha256:c1", {}, "t")
    store.get_or_create_release("api", "sha256:a2", "sha256:c2", {}, "t")
    store.put_service(ServiceRecord("api", 1, 1, None))  # api r2: neither
    instance(store, "cron", serial=1, release=1, state=InstanceState.PENDING)  # no service row
    instance(state_kit.open("prod"), "web", serial=1, release=1)  # another environment

    found = store.releases_in_use()

    assert [(r.service, r.name) for r in found] == [
        ("api", "r1"),
        ("cron", "r1"),
        ("web", "r2"),
        ("web", "r3"),
        ("web", "r4"),
    ]
    assert found[-1] == store.get_release("web", 4)  # whole records, config included
    assert state_kit.open("staging").releases_in_use() == []


def test_data_that_is_not_json_is_refused(state_store: StateStore) -> None:
    with pytest.raises(StateError, match="JSON"):
        state_store.get_or_create_release("web", "sha256:a", "sha256:x", {"f": object()}, "a")
    with pytest.raises(StateError, match="JSON"):
        state_store.append_event("x", "y", data={"when": time})
    assert state_store.list_releases("web") == []


# --- instances ---------------------------------------------------------------------------


def test_instances_are_recorded_and_listed_in_order(state_store: StateStore) -> None:
    ids = [instance(state_store, "web", serial=1, release=1) for _ in range(10)]
    for old in ids[:9]:  # replaced one after another in slot 1: only the last one lives
        state_store.put_instance(
            InstanceRecord(old, "web", 1, 1, InstanceState.STOPPED, reason="replaced")
        )
    api = instance(state_store, "api", serial=2, release=1)
    pending = instance(state_store, "web", serial=0, release=2, state=InstanceState.PENDING)

    live = state_store.list_instances()
    assert [r.id for r in live] == [api, pending, ids[9]]
    everything = [r.id for r in state_store.list_instances(include_gone=True)]
    assert everything == [api, pending, *ids]  # web-9 before web-10: ids in numeric order
    assert [r.id for r in state_store.list_instances("api")] == [api]

    stopped = state_store.get_instance(ids[0])
    assert stopped is not None
    assert (stopped.state, stopped.reason) == (InstanceState.STOPPED, "replaced")
    assert state_store.get_instance("web-999") is None


def test_an_instance_keeps_its_fields_when_it_changes_state(state_store: StateStore) -> None:
    instance_id = instance(state_store, "web", serial=3, release=1, state=InstanceState.PENDING)
    running = InstanceRecord(
        instance_id,
        "web",
        3,
        1,
        InstanceState.RUNNING,
        address="127.0.0.1:41234",
        driver_ref="pid:1234:99.5",
        created_at=10.0,
        updated_at=11.5,
    )
    state_store.put_instance(running)

    assert state_store.get_instance(instance_id) == running
    assert state_store.list_instances() == [running]


def test_an_instance_belongs_to_one_existing_release(state_store: StateStore) -> None:
    with pytest.raises(StateError, match="r4 of 'web'"):
        state_store.put_instance(InstanceRecord("web-1", "web", 1, 4, InstanceState.PENDING))
    instance_id = instance(state_store, "web", serial=1, release=1)
    state_store.get_or_create_release("web", "sha256:new", "sha256:new", {}, "t")

    with pytest.raises(StateError, match="cannot become web r2"):
        state_store.put_instance(InstanceRecord(instance_id, "web", 1, 2, InstanceState.RUNNING))

    recorded = state_store.get_instance(instance_id)
    assert recorded is not None and recorded.release == 1


def test_instance_ids_are_never_handed_out_twice(state_store: StateStore) -> None:
    handed = [state_store.new_instance_id("web") for _ in range(5)]
    handed.append(state_store.new_instance_id("api"))
    handed.append(state_store.new_instance_id("web"))

    assert handed == ["web-1", "web-2", "web-3", "web-4", "web-5", "api-1", "web-6"]


# --- services ----------------------------------------------------------------------------


def test_services_are_put_replaced_listed_and_deleted(state_store: StateStore) -> None:
    state_store.get_or_create_release("web", "sha256:a", "sha256:x", {}, "alice")
    web = ServiceRecord("web", None, 2, 8080, {"strategy": {"kind": "rolling"}}, 5.0)
    state_store.put_service(web)
    state_store.put_service(ServiceRecord("api", None, 1, None))
    state_store.put_service(ServiceRecord("db", None, 1, None))
    web_r1 = replace(web, current_release=1, replicas=3, updated_at=6.0)
    state_store.put_service(web_r1)

    assert state_store.get_service("web") == web_r1
    assert [s.name for s in state_store.list_services()] == ["api", "db", "web"]

    state_store.delete_service("db")
    state_store.delete_service("never-there")
    assert state_store.get_service("db") is None
    assert [s.name for s in state_store.list_services()] == ["api", "web"]


def test_a_service_cannot_point_at_a_missing_release(state_store: StateStore) -> None:
    with pytest.raises(StateError, match="r2 of 'web'"):
        state_store.put_service(ServiceRecord("web", 2, 1, None))
    assert state_store.get_service("web") is None


# --- events ------------------------------------------------------------------------------


def test_events_are_appended_in_order_and_filtered(state_kit: StateKit) -> None:
    store = state_kit.open()
    first = store.append_event("apply.started", "apply a-1 started", actor="alice@build-1")
    state_kit.clock.now += 1
    web = store.append_event("instance.started", "web-1 up", service="web", data={"id": "web-1"})
    store.append_event("instance.started", "api-1 up", service="api")
    store.append_event("instance.stopped", "web-1 down", service="web")

    listed = store.list_events()
    assert [e.seq for e in listed] == [1, 2, 3, 4]
    assert listed[0] == first
    assert (first.ts, first.actor, first.data) == (T0, "alice@build-1", {})
    assert listed[1] == web
    assert (web.ts, web.service, web.data) == (T0 + 1, "web", {"id": "web-1"})
    assert [e.message for e in store.list_events(service="web")] == ["web-1 up", "web-1 down"]
    assert [e.seq for e in store.list_events(after_seq=2)] == [3, 4]
    assert [e.seq for e in store.list_events(after_seq=1, limit=2)] == [2, 3]
    assert [e.seq for e in store.list_events(service="web", after_seq=2)] == [4]


# --- journal (law 7) ---------------------------------------------------------------------


def test_journal_entries_stay_pending_until_finished(state_store: StateStore) -> None:
    start = state_store.journal_begin("instance.start", {"id": "web-1"}, apply_id="a-1")
    stop = state_store.journal_begin("instance.stop", {"id": "web-0"}, apply_id="a-1")
    swap = state_store.journal_begin("router.weights", {"web": {"r1": 0, "r2": 100}})

    assert [e.seq for e in state_store.journal_pending()] == [start.seq, stop.seq, swap.seq]
    assert state_store.journal_pending()[0] == start
    assert (start.status, start.apply_id, start.data) == ("pending", "a-1", {"id": "web-1"})

    state_store.journal_finish(start.seq)
    state_store.journal_finish(swap.seq, aborted=True)
    state_store.journal_finish(start.seq)  # finishing twice the same way changes nothing

    assert state_store.journal_pending() == [stop]
    with pytest.raises(StateError, match="already done"):
        state_store.journal_finish(start.seq, aborted=True)
    with pytest.raises(StateError, match="no journal entry 99"):
        state_store.journal_finish(99)


# --- applies -----------------------------------------------------------------------------


def test_applies_are_created_updated_and_listed(state_kit: StateKit) -> None:
    store = state_kit.open()
    who = {"user": "alice", "host": "build-1"}
    first = ApplyRecord("a-1", ApplyStatus.RUNNING, {"web": 2}, who, created_at=T0)
    second = ApplyRecord("a-2", ApplyStatus.RUNNING, {"web": 3}, who, created_at=T0 + 5)
    store.create_apply(second)
    store.create_apply(first)
    assert store.get_apply("a-1") == first

    state_kit.clock.now = T0 + 30
    store.update_apply("a-1", status=ApplyStatus.SUCCEEDED, result={"ready": 2})

    done = store.get_apply("a-1")
    assert done == replace(
        first, status=ApplyStatus.SUCCEEDED, finished_at=T0 + 30, result={"ready": 2}
    )
    assert [a.id for a in store.list_applies()] == ["a-1", "a-2"]
    assert store.list_applies(status=ApplyStatus.RUNNING) == [second]
    assert store.get_apply("a-3") is None
    with pytest.raises(StateError, match="already exists"):
        store.create_apply(first)
    with pytest.raises(StateError, match="no apply a-3"):
        store.update_apply("a-3", status=ApplyStatus.FAILED)


# --- lock lease --------------------------------------------------------------------------


def test_the_lock_is_taken_extended_and_released(state_kit: StateKit) -> None:
    store = state_kit.open()
    held = store.acquire_lock(holder("h1"), ttl=30)
    assert held == replace(holder("h1"), since=T0, expires_at=T0 + 30)
    assert store.get_lock() == held

    state_kit.clock.now += 10
    again = store.acquire_lock(holder("h1", message="still shipping"), ttl=30)
    assert (again.since, again.expires_at, again.message) == (T0, T0 + 40, "still shipping")
    state_kit.clock.now += 10
    assert store.renew_lock("h1", ttl=60).expires_at == T0 + 80

    store.release_lock("someone-else")
    assert store.get_lock() is not None
    store.release_lock("h1")
    assert store.get_lock() is None
    assert store.acquire_lock(holder("h2"), ttl=30).holder_id == "h2"


def test_a_held_lock_refuses_others_and_names_its_holder(state_kit: StateKit) -> None:
    store = state_kit.open()
    held = store.acquire_lock(holder("h1"), ttl=300)
    state_kit.clock.now += 125

    with pytest.raises(LockedError) as caught:
        store.acquire_lock(holder("h2", user="bob"), ttl=300)

    message = str(caught.value)
    assert "alice@build-1 (pid 4242) running `corral apply` (ship r2)" in message
    assert "for apply" in message
    assert f"since {time.strftime('%H:%M:%S', time.localtime(T0))} (2 min ago)" in message
    assert "expires in 2 min" in message
    assert caught.value.holder == asdict(held)
    assert caught.value.exit_code == 3
    assert store.get_lock() == held


def test_an_expired_lease_is_taken_over_and_recorded(state_kit: StateKit) -> None:
    store = state_kit.open()
    old = store.acquire_lock(holder("h1"), ttl=30)
    state_kit.clock.now += 31  # h1 died without releasing; its lease ran out

    new = store.acquire_lock(holder("h2", user="bob"), ttl=30)

    assert (new.holder_id, new.since, new.expires_at) == ("h2", T0 + 31, T0 + 61)
    assert store.get_lock() == new
    [taken] = store.list_events()
    assert taken.kind == "lock.taken_over"
    assert old.describe() in taken.message
    assert taken.data["previous"] == asdict(old)
    with pytest.raises(LockedError, match="h1 lost the lock") as caught:
        store.renew_lock("h1", ttl=30)
    assert caught.value.holder["holder_id"] == "h2"


def test_an_expired_lease_is_still_reported_and_renewable(state_kit: StateKit) -> None:
    store = state_kit.open()
    store.acquire_lock(holder("h1"), ttl=30)
    state_kit.clock.now += 45

    expired = store.get_lock()
    assert expired is not None and expired.expires_at < state_kit.clock.now
    assert store.renew_lock("h1", ttl=30).expires_at == state_kit.clock.now + 30


def test_breaking_the_lock_removes_it_and_is_recorded(state_store: StateStore) -> None:
    held = state_store.acquire_lock(holder("h1"), ttl=300)

    assert state_store.break_lock() == held
    assert state_store.get_lock() is None
    assert state_store.break_lock() is None
    [broken] = state_store.list_events()
    assert (broken.kind, broken.data["previous"]) == ("lock.broken", asdict(held))
    with pytest.raises(LockedError, match="no longer held by h1"):
        state_store.renew_lock("h1", ttl=30)


# --- agent -------------------------------------------------------------------------------


def test_the_agent_is_registered_and_cleared_only_by_itself(state_store: StateStore) -> None:
    agent = AgentRecord(
        "ag-1", "build-1", 77, "/home/a/.corral", "/run/api.sock", T0, T0 + 1, "http://h:1"
    )
    state_store.register_agent(agent)
    assert state_store.get_agent() == agent

    state_store.clear_agent("ag-2")  # a late exit of a previous agent must not clear ours
    assert state_store.get_agent() == agent
    successor = replace(agent, agent_id="ag-3", pid=78)
    state_store.register_agent(successor)
    assert state_store.get_agent() == successor
    state_store.clear_agent("ag-3")
    assert state_store.get_agent() is None


# --- environments ------------------------------------------------------------------------


def test_secret_versions_are_numbered_kept_and_pruned(state_store: StateStore) -> None:
    for n in range(1, 5):
        stored = state_store.put_secret("db", f"ct{n}", "k1", created_by="alice", keep=3)
        assert (stored.name, stored.version, stored.ciphertext) == ("db", n, f"ct{n}")
    state_store.put_secret("api", "ct-a", "k1", created_by="bob")
    kept = [(s.name, s.version) for s in state_store.list_secrets()]
    assert kept == [("api", 1), ("db", 2), ("db", 3), ("db", 4)]
    newest = state_store.get_secret("db")
    assert newest is not None and (newest.version, newest.key_id) == (4, "k1")
    old = state_store.get_secret("db", 2)
    assert old is not None and (old.ciphertext, old.created_by) == ("ct2", "alice")
    assert state_store.get_secret("db", 1) is None  # pruned: only the last 3 are kept
    assert state_store.get_secret("nope") is None


def test_a_deleted_secret_never_reuses_its_version_numbers(state_store: StateStore) -> None:
    state_store.put_secret("db", "ct1", "k1", created_by="a")
    state_store.put_secret("db", "ct2", "k1", created_by="a")
    assert state_store.delete_secret("db") == 2
    assert state_store.delete_secret("db") == 0
    assert state_store.get_secret("db") is None
    # a release recorded v2; a new value after rm must not pass for it
    assert state_store.put_secret("db", "ct3", "k1", created_by="a").version == 3


def test_secrets_are_per_environment(state_kit: StateKit) -> None:
    dev, prod = state_kit.open("dev"), state_kit.open("prod")
    dev.put_secret("db", "dev-ct", "k1", created_by="a")
    assert prod.get_secret("db") is None and prod.list_secrets() == []
    prod.put_secret("db", "prod-ct", "k1", created_by="a")
    got = dev.get_secret("db")
    assert got is not None and got.ciphertext == "dev-ct"


def fill(store: StateStore) -> None:
    """One record of every kind."""
    store.get_or_create_release("web", "sha256:a", "sha256:x", {}, "alice")
    store.put_service(ServiceRecord("web", 1, 1, None))
    store.put_instance(
        InstanceRecord(store.new_instance_id("web"), "web", 1, 1, InstanceState.RUNNING)
    )
    store.append_event("apply.started", "started")
    store.journal_begin("instance.start", {})
    store.create_apply(ApplyRecord("a-1", ApplyStatus.RUNNING, {}, {}, T0))
    store.acquire_lock(holder("h1"), ttl=300)
    store.register_agent(AgentRecord("ag-1", "build-1", 77, "/h", "/s", T0, T0))


def test_environments_see_nothing_of_each_other(state_kit: StateKit) -> None:
    dev, prod = state_kit.open("dev"), state_kit.open("prod")
    fill(dev)

    assert prod.list_releases("web") == []
    assert prod.get_release("web", 1) is None
    assert prod.list_services() == [] and prod.get_service("web") is None
    assert prod.list_instances(include_gone=True) == []
    assert prod.get_instance("web-1") is None
    assert prod.list_events() == [] and prod.journal_pending() == []
    assert prod.list_applies() == [] and prod.get_apply("a-1") is None
    assert prod.get_lock() is None and prod.get_agent() is None

    fill(prod)  # numbering, ids, sequences and the lock are each environment's own
    assert prod.list_releases("web")[0].number == 1
    assert [i.id for i in prod.list_instances()] == ["web-1"]
    assert [e.seq for e in prod.list_events()] == [1]
    prod.break_lock()
    assert dev.get_lock() is not None
    prod.clear_agent("ag-1")
    assert dev.get_agent() is not None


def test_stores_on_the_same_environment_share_everything(state_kit: StateKit) -> None:
    writer, reader = state_kit.open("dev"), state_kit.open("dev")
    fill(writer)

    assert reader.list_releases("web") == writer.list_releases("web")
    assert reader.list_instances() == writer.list_instances()
    assert reader.get_lock() == writer.get_lock()
    assert reader.new_instance_id("web") == "web-2"
    with pytest.raises(LockedError):
        reader.acquire_lock(holder("h2"), ttl=30)


# --- SQL databases: several processes, reopening -----------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def state_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh state database (created by opening it once)."""
    url = database_url(request, request.param, tmp_path)
    SqlStateStore(url).close()
    return url


def _race_for_lock(store: SqlStateStore, name: str) -> str:
    try:
        store.acquire_lock(holder(name, pid=os.getpid()), ttl=60)
    except LockedError as exc:
        return f"locked by {exc.holder.get('holder_id')}"
    return "won"


def _number_things(store: SqlStateStore, name: str) -> list[int | str]:
    handed: list[int | str] = []
    for i in range(5):
        handed.append(
            store.get_or_create_release("web", f"sha256:{name}-{i}", "h", {}, name).number
        )
        handed.append(store.new_instance_id("web"))
    return handed


def _worker(url: str, name: str, job: Callable[..., Any], barrier: Any, results: Any) -> None:
    """Open the store, wait for the others, do `job` at once; report exactly one result."""
    try:
        store = SqlStateStore(url, "dev")
        try:
            barrier.wait(timeout=60)
            results.put((name, job(store, name)))
        finally:
            store.close()
    except Exception as exc:
        results.put((name, f"error: {exc!r}"))


def run_processes(job: Callable[..., Any], url: str, count: int) -> dict[str, Any]:
    """Run `job(store, name)` in `count` fresh processes at the same moment; their results."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(count), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, f"p{i}", job, barrier, results))
        for i in range(count)
    ]
    try:
        for proc in procs:
            proc.start()
        collected = dict(results.get(timeout=60) for _ in procs)
        for proc in procs:
            proc.join(timeout=30)
        return collected
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
        results.close()


def test_processes_racing_for_the_lock_have_one_winner(state_db: str) -> None:
    url = state_db
    outcomes = run_processes(_race_for_lock, url, count=4)

    winners = [name for name, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    assert sorted(outcomes.values()) == sorted(["won"] + [f"locked by {winners[0]}"] * 3)
    store = SqlStateStore(url)
    try:
        lock = store.get_lock()
        assert lock is not None and lock.holder_id == winners[0]
    finally:
        store.close()


def test_processes_never_share_release_numbers_or_ids(state_db: str) -> None:
    url = state_db
    results = run_processes(_number_things, url, count=4)

    handed = [value for values in results.values() for value in values]
    numbers = sorted(v for v in handed if isinstance(v, int))
    ids = sorted(v for v in handed if isinstance(v, str))
    assert numbers == list(range(1, 21)), results
    assert ids == sorted(f"web-{n}" for n in range(1, 21)), results


def test_everything_survives_reopening(state_db: str) -> None:
    url = state_db
    first = SqlStateStore(url, "dev")
    try:
        fill(first)
        first.new_instance_id("web")  # web-2, handed out but never recorded
        before = (
            first.list_releases("web"),
            first.list_services(),
            first.list_instances(include_gone=True),
            first.list_events(),
            first.journal_pending(),
            first.list_applies(),
            first.get_lock(),
            first.get_agent(),
        )
    finally:
        first.close()
    raw_execute(url, "DELETE FROM instances")  # even rows deleted by hand give no id back

    second = SqlStateStore(url, "dev")
    try:
        after = (
            second.list_releases("web"),
            second.list_services(),
            before[2],
            second.list_events(),
            second.journal_pending(),
            second.list_applies(),
            second.get_lock(),
            second.get_agent(),
        )
        assert after == before
        assert second.list_instances(include_gone=True) == []
        assert second.new_instance_id("web") == "web-3"
        assert second.append_event("x", "y").seq == 2
    finally:
        second.close()


def test_the_database_is_stamped_and_a_newer_one_refused(state_db: str) -> None:
    url = state_db
    assert raw_execute(url, "SELECT version_num FROM alembic_version") == [(migrations.HEAD,)]
    assert raw_execute(url, "SELECT version FROM schema_version") == [(2,)]
    raw_execute(url, "UPDATE alembic_version SET version_num = '9999'")

    with pytest.raises(StateError, match="schema revision 9999, made by a newer corral"):
        SqlStateStore(url)
    assert raw_execute(url, "SELECT version_num FROM alembic_version") == [("9999",)]


# --- SQLite only: the file ---------------------------------------------------------------


def test_the_sqlite_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.db"
    SqlStateStore(f"sqlite:///{path}").close()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert raw_execute(f"sqlite:///{path}", "PRAGMA journal_mode") == [("wal",)]


def test_an_in_memory_sqlite_url_is_refused() -> None:
    with pytest.raises(UsageError, match="needs a file path"):
        SqlStateStore("sqlite://")


# --- open_state --------------------------------------------------------------------------


def test_open_state_defaults_to_sqlite_in_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CORRAL_STATE_URL", raising=False)
    store = open_state(None, "staging", tmp_path / "home")
    try:
        assert store.env == "staging"
        store.append_event("x", "y")
    finally:
        store.close()
    assert (tmp_path / "home" / "state.db").is_file()


def test_open_state_honours_the_url_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_STATE_URL", f"sqlite:///{tmp_path / 'from-env.db'}")
    for url in (None, f"sqlite:///{tmp_path / 'given.db'}"):
        open_state(url, "dev", tmp_path / "home").close()

    assert sorted(p.name for p in tmp_path.glob("*.db")) == ["from-env.db", "given.db"]
    assert not (tmp_path / "home" / "state.db").exists()


def test_open_state_opens_postgresql_urls(pg_url: str, tmp_path: Path) -> None:
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        store = open_state(url, "prod", tmp_path / "home")
        try:
            store.append_event("x", "y")
            assert [e.seq for e in store.list_events()][-1] in (1, 2)
        finally:
            store.close()
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://corral:hunter2@127.0.0.1/corral", "unsupported state URL mysql://…"),
        ("postgresql+asyncpg://127.0.0.1/corral", "connects with psycopg 3, not 'postgresql"),
        ("postgresql+psycopg2://127.0.0.1/corral", "connects with psycopg 3, not 'postgresql"),
    ],
)
def test_open_state_refuses_what_it_cannot_open(tmp_path: Path, url: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem) as caught:
        open_state(url, "dev", tmp_path)
    assert "hunter2" not in str(caught.value)
