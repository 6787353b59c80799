"""The SQL `StateStore`: SQLite (one machine) and PostgreSQL (a team), with SQLAlchemy 2 Core.

Portable SQL only; the dialect differences sit in `_Dialect` below:
- SQLite: WAL, a busy timeout, foreign keys on, and `BEGIN IMMEDIATE` for every write, so two
  processes never interleave a read-modify-write (release numbers, instance ids, the lock).
- PostgreSQL (psycopg 3): every write transaction first takes a transaction-scoped advisory
  lock per environment, which serialises the same read-modify-writes across processes and
  machines; READ COMMITTED then shows it everything the previous holder committed.

Opening a store migrates its schema to the newest revision with Alembic
(`corral.state.migrations`), inside a write transaction serialised on a schema key, so that
several processes opening an old database at once migrate it once. A database stamped with a
revision this corral does not know was made by a newer corral and is refused, not misread.
`metadata` below is the schema the newest revision makes (a test compares the two).

JSON columns are text in canonical JSON; timestamps are float seconds (`time.time()`).
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Engine,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from corral.errors import StateError, UsageError
from corral.state import migrations
from corral.state.memory import (
    Clock,
    EventDraft,
    broken_event,
    check_instance_update,
    decide_acquire,
    decide_renew,
    instance_order,
    journal_transition,
    json_copy,
    missing_release,
    taken_over_event,
    to_json,
)
from corral.state.records import (
    LIVE_STATES,
    AgentRecord,
    ApplyRecord,
    ApplyStatus,
    Event,
    InstanceRecord,
    InstanceState,
    JournalEntry,
    JournalStatus,
    LockInfo,
    Release,
    SecretVersion,
    ServiceRecord,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

BUSY_TIMEOUT_S = 10.0
STATE_URL_VAR = "CORRAL_STATE_URL"
CONNECT_TIMEOUT_S = 10  # PostgreSQL: an unreachable server fails in seconds, not minutes

metadata = MetaData()

# Stamped 2 by revision 0002: corrals from before Alembic refuse a database above 1.
schema_version = Table("schema_version", metadata, Column("version", Integer, primary_key=True))

releases = Table(
    "releases",
    metadata,
    Column("env", Text, primary_key=True),
    Column("service", Text, primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("image_digest", Text, nullable=False),
    Column("config_hash", Text, nullable=False),
    Column("config", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("created_by", Text, nullable=False),
    UniqueConstraint("env", "service", "image_digest", "config_hash", name="releases_key"),
)

services = Table(
    "services",
    metadata,
    Column("env", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("current_release", Integer),
    Column("replicas", Integer, nullable=False),
    Column("route_port", Integer),
    Column("settings", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
    ForeignKeyConstraint(
        ["env", "name", "current_release"],
        ["releases.env", "releases.service", "releases.number"],
    ),
)

instances = Table(
    "instances",
    metadata,
    Column("env", Text, primary_key=True),
    Column("id", Text, primary_key=True),
    Column("service", Text, nullable=False),
    Column("serial", Integer, nullable=False),
    Column("release", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("address", Text),
    Column("driver_ref", Text),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("reason", Text),
    ForeignKeyConstraint(
        ["env", "service", "release"],
        ["releases.env", "releases.service", "releases.number"],
    ),
    Index("instances_by_service", "env", "service"),
)

# Monotonic per-environment counters: instance ids (`instance:<service>`), event and journal
# sequence numbers. Never decremented, never deleted, so nothing is handed out twice.
counters = Table(
    "counters",
    metadata,
    Column("env", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("env", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("ts", Double, nullable=False),
    Column("kind", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("service", Text),
    Column("actor", Text),
    Column("data", Text, nullable=False),
    Index("events_by_service", "env", "service", "seq"),
)

journal = Table(
    "journal",
    metadata,
    Column("env", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("ts", Double, nullable=False),
    Column("apply_id", Text),
    Column("kind", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("status", Text, nullable=False),
    Index("journal_by_status", "env", "status"),
)

applies = Table(
    "applies",
    metadata,
    Column("env", Text, primary_key=True),
    Column("id", Text, primary_key=True),
    Column("status", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("holder", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("finished_at", Double),
    Column("result", Text, nullable=False),
)

locks = Table(
    "locks",
    metadata,
    Column("env", Text, primary_key=True),
    Column("holder_id", Text, nullable=False),
    Column("user", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("command", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("operation", Text, nullable=False),
    Column("since", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
)

agents = Table(
    "agents",
    metadata,
    Column("env", Text, primary_key=True),
    Column("agent_id", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("home", Text, nullable=False),
    Column("socket", Text, nullable=False),
    Column("started_at", Double, nullable=False),
    Column("heartbeat_at", Double, nullable=False),
    Column("api", Text, nullable=False, server_default=""),  # revision 0004
)

# Revision 0003: secret versions, ciphertext only (law 5); the key never comes here.
secrets = Table(
    "secrets",
    metadata,
    Column("env", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("ciphertext", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("created_by", Text, nullable=False),
)

_SCHEMA_KEY = "corral:schema"


def _switch_to_wal(cursor: Any) -> None:
    """`PRAGMA journal_mode = WAL` needs the database to itself, and SQLite answers "database
    is locked" at once, without its busy handler, while another process creates or migrates a
    new database: wait for it as the busy timeout would."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class _Dialect:
    """Everything that differs between databases: connecting, and serialising writes."""

    def __init__(self, url: URL) -> None:
        backend = url.get_backend_name()
        self.name = "postgresql" if backend == "postgres" else backend

    def prepare(self, url: URL) -> tuple[URL, dict[str, Any]]:
        """The URL to connect to and the engine options."""
        if self.name == "postgresql":
            return self._prepare_postgresql(url)
        if self.name != "sqlite":
            raise UsageError(
                f"unsupported state URL {url.render_as_string()!r}",
                hint="Use sqlite:///path/to/state.db or postgresql://user@host:port/database.",
            )
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise UsageError(
                f"the SQLite state store needs a file path, not {url.render_as_string()!r}",
                hint="Use sqlite:///path/to/state.db (tests: InMemoryStateStore).",
            )
        path = Path(database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file ourselves: SQLite would create it 0644, and it holds the fleet's
        # records. SQLite gives its -wal and -shm files the same mode as the database.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        return url.set(database=str(path)), {"connect_args": {"timeout": BUSY_TIMEOUT_S}}

    def _prepare_postgresql(self, url: URL) -> tuple[URL, dict[str, Any]]:
        if url.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
            raise UsageError(
                f"the PostgreSQL state store connects with psycopg 3, not {url.drivername!r}",
                hint="Use postgresql://user:password@host:port/database.",
            )
        connect_args: dict[str, Any] = {"application_name": "corral"}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        options = {"pool_pre_ping": True, "connect_args": connect_args}
        return url.set(drivername="postgresql+psycopg"), options

    def configure(self, engine: Engine) -> None:
        if self.name != "sqlite":
            return

        def on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see on_begin)
            cursor = dbapi_conn.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            _switch_to_wal(cursor)
            # NORMAL in WAL survives kill -9 of any process (law 7's crash); only power loss
            # may lose the last commits, and the database stays consistent.
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.close()

        def on_begin(conn: Connection) -> None:
            # IMMEDIATE takes the write lock up front: a deferred transaction that reads and
            # then writes can fail with SQLITE_BUSY instead of waiting its turn.
            write = conn.get_execution_options().get("corral_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        event.listen(engine, "connect", on_connect)
        event.listen(engine, "begin", on_begin)

    def serialise(self, conn: Connection, key: str) -> None:
        """Make this write transaction the only one on `key` until it ends."""
        if self.name == "postgresql":
            # a 64-bit key, so two environments practically never wait on each other
            lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
        # SQLite: BEGIN IMMEDIATE already serialises every write to the database.


_R = TypeVar("_R", bound="DataclassInstance")


def _columns(record: DataclassInstance) -> dict[str, Any]:
    """A record as column values: dicts as canonical JSON text, enums as their value."""
    values: dict[str, Any] = {}
    for f in fields(record):
        value = getattr(record, f.name)
        if isinstance(value, dict):
            value = to_json(value, f"{type(record).__name__}.{f.name}")
        elif isinstance(value, enum.Enum):
            value = value.value
        values[f.name] = value
    return values


def _record(cls: type[_R], row: Any, **convert: Callable[[Any], Any]) -> _R:
    """The record a row holds, each column passed through its `convert` function if any."""
    values = {f.name: getattr(row, f.name) for f in fields(cls)}
    for name, load in convert.items():
        values[name] = load(values[name])
    return cls(**values)


class SqlStateStore:
    """A `StateStore` in a SQL database; one engine (and connection pool) per store."""

    def __init__(self, url: str, env: str = "dev", *, clock: Clock = time.time) -> None:
        self.env = env
        self._clock = clock
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError) as exc:
            # not echoed: a URL that does not parse cannot have its password hidden
            raise UsageError(
                f"invalid state URL ({exc})",
                hint="Use sqlite:///path/to/state.db or postgresql://user:password@host:port/db.",
            ) from exc
        self._where = parsed.render_as_string(hide_password=True)
        self._dialect = _Dialect(parsed)
        with self._translated():
            parsed, options = self._dialect.prepare(parsed)
            self._engine = create_engine(parsed, **options)
            self._dialect.configure(self._engine)
            self._writer = self._engine.execution_options(corral_write=True)
        try:
            with self._translated():
                self._migrate()
        except BaseException:
            self._engine.dispose()  # a store that failed to open keeps no connection
            raise

    # plumbing

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
            if self._dialect.name == "postgresql" and isinstance(exc, OperationalError):
                raise StateError(
                    f"cannot use the state database {self._where}: {reason}",
                    hint=(
                        "Check that the PostgreSQL server named in the URL is running and "
                        "accepts connections from this host, and that the user, password and "
                        f"database are right (the URL comes from ${STATE_URL_VAR}). Nothing was "
                        "written; run again once it answers."
                    ),
                ) from exc
            if "locked" in reason or "busy" in reason:
                hint = (
                    f"Another process kept it busy for over {BUSY_TIMEOUT_S:g} s; run again "
                    "once it is done."
                )
            else:
                hint = "Check that the database is reachable and writable, then run again."
            raise StateError(f"state database {self._where} failed: {reason}", hint=hint) from exc
        except OSError as exc:
            raise StateError(f"cannot open state database {self._where}: {exc}") from exc

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._translated(), self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _writing(self, key: str | None = None) -> Iterator[Connection]:
        """One write transaction, alone on this environment until it commits."""
        with self._translated(), self._writer.begin() as conn:
            self._dialect.serialise(conn, key or f"corral:env:{self.env}")
            yield conn

    def _migrate(self) -> None:
        """Bring the schema to `migrations.HEAD`; cheap when it is there already."""
        with self._reading() as conn:
            if migrations.current_revision(conn) == migrations.HEAD:
                return
        with self._writing(_SCHEMA_KEY) as conn:
            current = migrations.current_revision(conn)  # again: another process may have won
            if current == migrations.HEAD:
                return
            if current is not None and current not in migrations.known_revisions():
                raise StateError(
                    f"state database {self._where} has schema revision {current}, made by a "
                    f"newer corral (this one knows up to {migrations.HEAD})",
                    hint="Upgrade corral to use this database.",
                )
            migrations.upgrade(conn)

    def _next(self, conn: Connection, name: str) -> int:
        """The next value of a never-decreasing counter (inside a write transaction)."""
        key = (counters.c.env == self.env) & (counters.c.name == name)
        value = conn.scalar(select(counters.c.value).where(key))
        if value is None:
            conn.execute(insert(counters).values(env=self.env, name=name, value=1))
            return 1
        conn.execute(update(counters).where(key).values(value=value + 1))
        return int(value) + 1

    def _has_release(self, conn: Connection, service: str, number: int) -> bool:
        found = conn.scalar(
            select(releases.c.number).where(
                (releases.c.env == self.env)
                & (releases.c.service == service)
                & (releases.c.number == number)
            )
        )
        return found is not None

    def _upsert(self, conn: Connection, table: Table, key: Any, values: dict[str, Any]) -> None:
        """Insert or replace one row; portable (runs inside a serialised write)."""
        if conn.execute(update(table).where(key).values(**values)).rowcount == 0:
            conn.execute(insert(table).values(env=self.env, **values))

    # releases

    def get_or_create_release(
        self,
        service: str,
        image_digest: str,
        config_hash: str,
        config: dict[str, Any],
        created_by: str,
    ) -> Release:
        config = json_copy(config, f"the config of a {service} release")
        mine = (releases.c.env == self.env) & (releases.c.service == service)
        with self._writing() as conn:
            row = conn.execute(
                select(releases).where(
                    mine
                    & (releases.c.image_digest == image_digest)
                    & (releases.c.config_hash == config_hash)
                )
            ).first()
            if row is not None:
                return _record(Release, row, config=json.loads)
            number = conn.scalar(select(func.max(releases.c.number)).where(mine)) or 0
            release = Release(
                service=service,
                number=number + 1,
                image_digest=image_digest,
                config_hash=config_hash,
                config=config,
                created_at=self._clock(),
                created_by=created_by,
            )
            conn.execute(insert(releases).values(env=self.env, **_columns(release)))
            return release

    def get_release(self, service: str, number: int) -> Release | None:
        with self._reading() as conn:
            row = conn.execute(
                select(releases).where(
                    (releases.c.env == self.env)
                    & (releases.c.service == service)
                    & (releases.c.number == number)
                )
            ).first()
        return _record(Release, row, config=json.loads) if row is not None else None

    def list_releases(self, service: str) -> list[Release]:
        with self._reading() as conn:
            rows = conn.execute(
                select(releases)
                .where((releases.c.env == self.env) & (releases.c.service == service))
                .order_by(releases.c.number)
            ).all()
        return [_record(Release, r, config=json.loads) for r in rows]

    def releases_in_use(self) -> list[Release]:
        def names_it(table: Table, service: str, number: str) -> Any:  # the outer release row
            return (
                (table.c.env == releases.c.env)
                & (table.c[service] == releases.c.service)
                & (table.c[number] == releases.c.number)
            )

        current = select(services.c.name).where(names_it(services, "name", "current_release"))
        live = select(instances.c.id).where(
            names_it(instances, "service", "release")
            & instances.c.state.in_(sorted(s.value for s in LIVE_STATES))
        )
        with self._reading() as conn:  # one query for all services: status reads it per view
            rows = conn.execute(
                select(releases).where(
                    (releases.c.env == self.env) & (current.exists() | live.exists())
                )
            ).all()
        found = [_record(Release, r, config=json.loads) for r in rows]
        # sorted here, not in SQL: the order must not depend on the database's collation
        return sorted(found, key=lambda r: (r.service, r.number))

    # services

    def put_service(self, record: ServiceRecord) -> None:
        values = _columns(record)
        key = (services.c.env == self.env) & (services.c.name == record.name)
        with self._writing() as conn:
            number = record.current_release
            if number is not None and not self._has_release(conn, record.name, number):
                raise missing_release(self.env, record.name, number, f"service {record.name}")
            self._upsert(conn, services, key, values)

    def get_service(self, name: str) -> ServiceRecord | None:
        with self._reading() as conn:
            row = conn.execute(
                select(services).where((services.c.env == self.env) & (services.c.name == name))
            ).first()
        return _record(ServiceRecord, row, settings=json.loads) if row is not None else None

    def list_services(self) -> list[ServiceRecord]:
        with self._reading() as conn:
            rows = conn.execute(select(services).where(services.c.env == self.env)).all()
        # Sorted here, not in SQL: the order must not depend on the database's collation.
        found = [_record(ServiceRecord, r, settings=json.loads) for r in rows]
        return sorted(found, key=lambda s: s.name)

    def delete_service(self, name: str) -> None:
        with self._writing() as conn:
            conn.execute(
                delete(services).where((services.c.env == self.env) & (services.c.name == name))
            )

    # instances

    def new_instance_id(self, service: str) -> str:
        with self._writing() as conn:
            return f"{service}-{self._next(conn, f'instance:{service}')}"

    def put_instance(self, record: InstanceRecord) -> None:
        record = replace(record, state=InstanceState(record.state))
        key = (instances.c.env == self.env) & (instances.c.id == record.id)
        with self._writing() as conn:
            if not self._has_release(conn, record.service, record.release):
                raise missing_release(
                    self.env, record.service, record.release, f"instance {record.id}"
                )
            old = conn.execute(select(instances).where(key)).first()
            if old is not None:
                check_instance_update(_record(InstanceRecord, old, state=InstanceState), record)
            self._upsert(conn, instances, key, _columns(record))

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        with self._reading() as conn:
            row = conn.execute(
                select(instances).where(
                    (instances.c.env == self.env) & (instances.c.id == instance_id)
                )
            ).first()
        return _record(InstanceRecord, row, state=InstanceState) if row is not None else None

    def list_instances(
        self, service: str | None = None, *, include_gone: bool = False
    ) -> list[InstanceRecord]:
        query = select(instances).where(instances.c.env == self.env)
        if service is not None:
            query = query.where(instances.c.service == service)
        if not include_gone:
            query = query.where(instances.c.state.in_(sorted(s.value for s in LIVE_STATES)))
        with self._reading() as conn:
            rows = conn.execute(query).all()
        found = [_record(InstanceRecord, r, state=InstanceState) for r in rows]
        return sorted(found, key=instance_order)

    # events

    def _append(
        self,
        conn: Connection,
        kind: str,
        message: str,
        *,
        service: str | None = None,
        actor: str | None = None,
        data: dict[str, Any],
    ) -> Event:
        appended = Event(
            seq=self._next(conn, "event"),
            ts=self._clock(),
            kind=kind,
            message=message,
            service=service,
            actor=actor,
            data=json_copy(data, f"the data of a {kind} event"),
        )
        conn.execute(insert(events).values(env=self.env, **_columns(appended)))
        return appended

    def append_event(
        self,
        kind: str,
        message: str,
        *,
        service: str | None = None,
        actor: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        with self._writing() as conn:
            return self._append(conn, kind, message, service=service, actor=actor, data=data or {})

    def list_events(
        self, *, service: str | None = None, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]:
        query = select(events).where((events.c.env == self.env) & (events.c.seq > after_seq))
        if service is not None:
            query = query.where(events.c.service == service)
        with self._reading() as conn:
            rows = conn.execute(query.order_by(events.c.seq).limit(max(limit, 0))).all()
        return [_record(Event, r, data=json.loads) for r in rows]

    # journal

    def journal_begin(
        self, kind: str, data: dict[str, Any], *, apply_id: str | None = None
    ) -> JournalEntry:
        data = json_copy(data, f"the data of a {kind} journal entry")
        with self._writing() as conn:
            entry = JournalEntry(
                seq=self._next(conn, "journal"),
                ts=self._clock(),
                apply_id=apply_id,
                kind=kind,
                data=data,
                status=JournalStatus.PENDING,
            )
            conn.execute(insert(journal).values(env=self.env, **_columns(entry)))
            return entry

    def journal_finish(self, seq: int, *, aborted: bool = False) -> None:
        key = (journal.c.env == self.env) & (journal.c.seq == seq)
        with self._writing() as conn:
            current = conn.scalar(select(journal.c.status).where(key))
            status = journal_transition(
                self.env,
                seq,
                JournalStatus(current) if current is not None else None,
                aborted=aborted,
            )
            if status is not None:
                conn.execute(update(journal).where(key).values(status=status.value))

    def journal_pending(self) -> list[JournalEntry]:
        pending = (journal.c.env == self.env) & (journal.c.status == JournalStatus.PENDING.value)
        with self._reading() as conn:
            rows = conn.execute(select(journal).where(pending).order_by(journal.c.seq)).all()
        return [_record(JournalEntry, r, data=json.loads, status=JournalStatus) for r in rows]

    # applies

    def _read_apply(self, row: Any) -> ApplyRecord:
        return _record(
            ApplyRecord,
            row,
            status=ApplyStatus,
            target=json.loads,
            holder=json.loads,
            result=json.loads,
        )

    def create_apply(self, record: ApplyRecord) -> None:
        values = _columns(replace(record, status=ApplyStatus(record.status)))
        key = (applies.c.env == self.env) & (applies.c.id == record.id)
        with self._writing() as conn:
            if conn.scalar(select(applies.c.id).where(key)) is not None:
                raise StateError(f"apply {record.id} already exists in environment {self.env!r}")
            conn.execute(insert(applies).values(env=self.env, **values))

    def update_apply(
        self, apply_id: str, *, status: ApplyStatus, result: dict[str, Any] | None = None
    ) -> None:
        status = ApplyStatus(status)
        values: dict[str, Any] = {"status": status.value}
        if result is not None:
            values["result"] = to_json(result, f"the result of apply {apply_id}")
        key = (applies.c.env == self.env) & (applies.c.id == apply_id)
        with self._writing() as conn:
            values["finished_at"] = None if status == ApplyStatus.RUNNING else self._clock()
            if conn.execute(update(applies).where(key).values(**values)).rowcount == 0:
                raise StateError(f"no apply {apply_id} in environment {self.env!r}")

    def get_apply(self, apply_id: str) -> ApplyRecord | None:
        with self._reading() as conn:
            row = conn.execute(
                select(applies).where((applies.c.env == self.env) & (applies.c.id == apply_id))
            ).first()
        return self._read_apply(row) if row is not None else None

    def list_applies(self, *, status: ApplyStatus | None = None) -> list[ApplyRecord]:
        query = select(applies).where(applies.c.env == self.env)
        if status is not None:
            query = query.where(applies.c.status == ApplyStatus(status).value)
        with self._reading() as conn:
            rows = conn.execute(query).all()
        return sorted((self._read_apply(r) for r in rows), key=lambda a: (a.created_at, a.id))

    # lock lease

    def _current_lock(self, conn: Connection) -> LockInfo | None:
        row = conn.execute(select(locks).where(locks.c.env == self.env)).first()
        return _record(LockInfo, row) if row is not None else None

    def _store_lock(self, conn: Connection, info: LockInfo) -> None:
        self._upsert(conn, locks, locks.c.env == self.env, _columns(info))

    def _append_draft(self, conn: Connection, draft: EventDraft) -> None:
        self._append(conn, draft.kind, draft.message, actor=draft.actor, data=draft.data)

    def acquire_lock(self, info: LockInfo, ttl: float) -> LockInfo:
        with self._writing() as conn:
            now = self._clock()  # read once the write lock is ours: no lease ends meanwhile
            held, replaced = decide_acquire(self.env, self._current_lock(conn), info, ttl, now)
            self._store_lock(conn, held)
            if replaced is not None:
                self._append_draft(conn, taken_over_event(held, replaced, now))
            return held

    def renew_lock(self, holder_id: str, ttl: float) -> LockInfo:
        with self._writing() as conn:
            now = self._clock()
            held = decide_renew(self.env, self._current_lock(conn), holder_id, ttl, now)
            self._store_lock(conn, held)
            return held

    def release_lock(self, holder_id: str) -> None:
        with self._writing() as conn:
            conn.execute(
                delete(locks).where((locks.c.env == self.env) & (locks.c.holder_id == holder_id))
            )

    def get_lock(self) -> LockInfo | None:
        with self._reading() as conn:
            return self._current_lock(conn)

    def break_lock(self) -> LockInfo | None:
        with self._writing() as conn:
            old = self._current_lock(conn)
            if old is not None:
                conn.execute(delete(locks).where(locks.c.env == self.env))
                self._append_draft(conn, broken_event(old, self._clock()))
            return old

    # agent ownership

    def register_agent(self, record: AgentRecord) -> None:
        with self._writing() as conn:
            self._upsert(conn, agents, agents.c.env == self.env, _columns(record))

    def get_agent(self) -> AgentRecord | None:
        with self._reading() as conn:
            row = conn.execute(select(agents).where(agents.c.env == self.env)).first()
        return _record(AgentRecord, row) if row is not None else None

    def clear_agent(self, agent_id: str) -> None:
        with self._writing() as conn:
            conn.execute(
                delete(agents).where((agents.c.env == self.env) & (agents.c.agent_id == agent_id))
            )

    # secrets

    def put_secret(
        self, name: str, ciphertext: str, key_id: str, *, created_by: str, keep: int = 10
    ) -> SecretVersion:
        with self._writing() as conn:
            record = SecretVersion(
                name=name,
                version=self._next(conn, f"secret:{name}"),
                ciphertext=ciphertext,
                key_id=key_id,
                created_at=self._clock(),
                created_by=created_by,
            )
            conn.execute(insert(secrets).values(env=self.env, **_columns(record)))
            mine = (secrets.c.env == self.env) & (secrets.c.name == name)
            conn.execute(delete(secrets).where(mine & (secrets.c.version <= record.version - keep)))
            return record

    def get_secret(self, name: str, version: int | None = None) -> SecretVersion | None:
        query = select(secrets).where((secrets.c.env == self.env) & (secrets.c.name == name))
        if version is not None:
            query = query.where(secrets.c.version == version)
        with self._reading() as conn:
            row = conn.execute(query.order_by(secrets.c.version.desc()).limit(1)).first()
        return _record(SecretVersion, row) if row is not None else None

    def list_secrets(self) -> list[SecretVersion]:
        query = select(secrets).where(secrets.c.env == self.env)
        with self._reading() as conn:
            rows = conn.execute(query.order_by(secrets.c.name, secrets.c.version)).all()
        return [_record(SecretVersion, r) for r in rows]

    def delete_secret(self, name: str) -> int:
        with self._writing() as conn:
            mine = (secrets.c.env == self.env) & (secrets.c.name == name)
            return int(conn.execute(delete(secrets).where(mine)).rowcount)

    def close(self) -> None:
        self._engine.dispose()
