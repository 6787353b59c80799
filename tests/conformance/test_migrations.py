"""Schema migrations (Alembic) on both databases: from nothing, from the previous revision,
from a database made before Alembic, by several processes at once, and never backwards."""

from __future__ import annotations

import multiprocessing
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, insert
from sqlalchemy.engine import make_url

from corral.state import migrations
from corral.state.records import InstanceState, LockInfo
from corral.state.sql import (
    SqlStateStore,
    agents,
    counters,
    events,
    instances,
    locks,
    metadata,
    releases,
    services,
)
from tests.conformance.test_state_store import T0, database_url, raw_execute

V1_DUMP = Path(__file__).parent / "data" / "state-v1.sql"
AGENT_ROW = {
    "agent_id": "ag-1", "host": "build-1", "pid": 1, "home": "/h", "socket": "/s",
    "started_at": T0, "heartbeat_at": T0,
}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return database_url(request, request.param, tmp_path)


def engine_for(url: str) -> Any:
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    else:
        Path(parsed.database or "").parent.mkdir(parents=True, exist_ok=True)
    return create_engine(parsed)


def test_one_chain_ends_at_head() -> None:
    script = migrations.script()
    assert script.get_heads() == [migrations.HEAD]
    assert migrations.known_revisions() == {"0001", "0002", "0003", "0004"}
    assert script.get_revision(migrations.HEAD).down_revision == "0003"


def test_the_migrated_schema_is_the_one_the_code_uses(empty_db: str) -> None:
    SqlStateStore(empty_db).close()

    engine = engine_for(empty_db)
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_a_database_at_the_previous_revision_is_upgraded_and_keeps_its_data(
    empty_db: str,
) -> None:
    engine = engine_for(empty_db)
    try:
        with engine.begin() as conn:
            migrations.upgrade(conn, "0001")
            assert migrations.current_revision(conn) == "0001"
            env = {"env": "dev"}
            release = {"image_digest": "sha256:a", "config_hash": "sha256:x", "config": "{}"}
            conn.execute(
                insert(releases).values(
                    **env, service="web", number=1, **release, created_at=T0, created_by="alice"
                )
            )
            conn.execute(
                insert(services).values(
                    **env, name="web", current_release=1, replicas=1, settings="{}", updated_at=T0
                )
            )
            conn.execute(
                insert(instances).values(
                    **env,
                    id="web-1",
                    service="web",
                    serial=0,
                    release=1,
                    state="running",
                    created_at=T0,
                    updated_at=T0,
                )
            )
            conn.execute(insert(counters).values(**env, name="instance:web", value=1))
            conn.execute(insert(counters).values(**env, name="event", value=1))
            conn.execute(
                insert(events).values(
                    **env, seq=1, ts=T0, kind="apply.started", message="started", data="{}"
                )
            )
            conn.execute(
                insert(locks).values(
                    **env,
                    holder_id="h1",
                    user="alice",
                    host="build-1",
                    pid=1,
                    command="corral apply",
                    message="ship",
                    operation="apply",
                    since=T0,
                    expires_at=T0 + 30,
                )
            )
            conn.execute(insert(agents).values(**env, **AGENT_ROW))
    finally:
        engine.dispose()

    store = SqlStateStore(empty_db, "dev")
    try:
        assert [r.image_digest for r in store.list_releases("web")] == ["sha256:a"]
        [web] = store.list_instances()
        assert (web.id, web.state) == ("web-1", InstanceState.RUNNING)
        lock = store.get_lock()
        assert lock is not None and lock.holder_id == "h1"
        agent = store.get_agent()
        assert agent is not None and agent.agent_id == "ag-1"
        assert store.new_instance_id("web") == "web-2"
        assert store.append_event("x", "y").seq == 2
    finally:
        store.close()
    assert raw_execute(empty_db, "SELECT version_num FROM alembic_version") == [(migrations.HEAD,)]
    assert raw_execute(empty_db, "SELECT version FROM schema_version") == [(2,)]


def test_an_agent_recorded_at_0003_gets_no_api_and_can_record_one(empty_db: str) -> None:
    engine = engine_for(empty_db)
    try:
        with engine.begin() as conn:
            migrations.upgrade(conn, "0003")
            conn.execute(insert(agents).values(env="dev", **AGENT_ROW))  # no `api` before 0004
    finally:
        engine.dispose()

    store = SqlStateStore(empty_db, "dev")
    try:
        agent = store.get_agent()
        assert agent is not None and (agent.agent_id, agent.api) == ("ag-1", "")
        store.register_agent(replace(agent, api="http://127.0.0.1:8765"))
        again = store.get_agent()
        assert again is not None and again.api == "http://127.0.0.1:8765"
    finally:
        store.close()
    assert raw_execute(empty_db, "SELECT version_num FROM alembic_version") == [("0004",)]


def test_a_sqlite_file_made_before_alembic_is_stamped_upgraded_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as raw:
        raw.executescript(V1_DUMP.read_text())
    raw.close()
    url = f"sqlite:///{path}"

    store = SqlStateStore(url, "hello/dev")
    try:
        assert store.get_service("web") is not None
        assert [i.id for i in store.list_instances()] == ["web-1"]
        assert [e.kind for e in store.list_events()] == ["apply.started"]
        assert [e.kind for e in store.journal_pending()] == ["instance.start"]
        assert [a.id for a in store.list_applies()] == ["a-1"]
        assert store.get_lock() == LockInfo(
            "h1", "alice", "build-1", 4242, "corral apply", "ship r2", "apply", T0, T0 + 300
        )
        assert store.new_instance_id("web") == "web-3"  # web-2 was handed out before
    finally:
        store.close()
    assert raw_execute(url, "SELECT version_num FROM alembic_version") == [(migrations.HEAD,)]
    assert raw_execute(url, "SELECT version FROM schema_version") == [(2,)]


def _open_at_once(url: str, barrier: Any, results: Any) -> None:
    try:
        barrier.wait(timeout=60)
        SqlStateStore(url).close()
        results.put("opened")
    except Exception as exc:
        results.put(f"error: {exc!r}")


def test_processes_opening_an_empty_database_at_once_migrate_it_once(empty_db: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(empty_db, barrier, results)) for _ in "abc"]
    try:
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
        results.close()
    assert outcomes == ["opened"] * 3
    assert raw_execute(empty_db, "SELECT version_num FROM alembic_version") == [(migrations.HEAD,)]
    assert raw_execute(empty_db, "SELECT version FROM schema_version") == [(2,)]
