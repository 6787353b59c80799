"""An in-memory `StateStore` for fast logic tests, and the rules every store shares.

The rules (lock lease, journal transitions, what an instance may not change, how records are
ordered and copied, the wording of errors) live here once so the in-memory and SQL stores
cannot drift apart; `corral.state.sql` imports them. They decide nothing about the fleet: they
only keep the records consistent.

Two `InMemoryStateStore`s built on one `MemoryBackend` behave like two stores on one database:
the same environment sees the same data, different environments see nothing of each other.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from corral.errors import LockedError, StateError
from corral.releases import canonical_json
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

Clock = Callable[[], float]

# --- rules shared by every store ---------------------------------------------------------


def to_json(value: dict[str, Any], what: str) -> str:
    """The stored spelling of a JSON column; refuses what a database could not keep."""
    try:
        return canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise StateError(f"cannot record {what}: {exc}; only JSON values can be stored") from exc


def json_copy(value: dict[str, Any], what: str) -> dict[str, Any]:
    """`value` as it comes back from a database: detached from the caller, tuples as lists."""
    loaded: dict[str, Any] = json.loads(to_json(value, what))
    return loaded


_D = TypeVar("_D", bound="DataclassInstance")


def detached(record: _D) -> _D:
    """A copy whose dict fields share nothing with `record` (releases are never edited: law 3)."""
    changes = {
        f.name: json_copy(value, f"{type(record).__name__}.{f.name}")
        for f in fields(record)
        if isinstance(value := getattr(record, f.name), dict)
    }
    return replace(record, **changes)


def instance_order(record: InstanceRecord) -> tuple[str, int, int, str]:
    """By service, serial, then id in numeric order (`web-9` before `web-10`)."""
    return (record.service, record.serial, len(record.id), record.id)


def missing_release(env: str, service: str, number: int, what: str) -> StateError:
    return StateError(
        f"{what} names release r{number} of {service!r}, which does not exist in "
        f"environment {env!r}",
        hint="Create the release first (get_or_create_release); every instance belongs to "
        "exactly one release (law 3).",
    )


def check_instance_update(old: InstanceRecord | None, new: InstanceRecord) -> None:
    """An instance never moves to another service or release (laws 1 and 3)."""
    if old is None or (old.service, old.release) == (new.service, new.release):
        return
    raise StateError(
        f"instance {new.id} belongs to {old.service} r{old.release}; it cannot become "
        f"{new.service} r{new.release}",
        hint="Start a new instance (new_instance_id) for the other release instead.",
    )


def journal_transition(
    env: str, seq: int, status: JournalStatus | None, *, aborted: bool
) -> JournalStatus | None:
    """The status a journal entry moves to when finished, or None when it already has it."""
    target = JournalStatus.ABORTED if aborted else JournalStatus.DONE
    if status is None:
        raise StateError(f"no journal entry {seq} in environment {env!r}")
    if status == target:
        return None
    if status != JournalStatus.PENDING:
        raise StateError(
            f"journal entry {seq} in environment {env!r} is already {status}; it cannot "
            f"become {target}"
        )
    return target


def human_span(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


def human_time(ts: float, now: float) -> str:
    """`12:03:04 (2 min ago)`, with the date when it is not today."""
    local = time.localtime(ts)
    same_day = local[:3] == time.localtime(now)[:3]
    clock = time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", local)
    return f"{clock} ({human_span(now - ts)} ago)"


def locked_error(env: str, holder: LockInfo, now: float, *, prefix: str = "") -> LockedError:
    """Who holds the lock, for what, since when, until when (Terraform's lock error)."""
    doing = f" for {holder.operation}" if holder.operation else ""
    if holder.expires_at > now:
        lease = f"its lease expires in {human_span(holder.expires_at - now)}"
    else:
        lease = f"its lease expired {human_span(now - holder.expires_at)} ago"
    return LockedError(
        f"{prefix}environment {env!r} is locked by {holder.describe()}{doing} since "
        f"{human_time(holder.since, now)}; {lease}",
        holder=asdict(holder),
    )


def decide_acquire(
    env: str, current: LockInfo | None, info: LockInfo, ttl: float, now: float
) -> tuple[LockInfo, LockInfo | None]:
    """The lock after `info` asks for it, and the holder it took over from (if any).

    Free → ours; ours → extended (same `since`); expired → taken over; else LockedError."""
    if current is not None and current.holder_id == info.holder_id:
        return replace(info, since=current.since, expires_at=now + ttl), None
    if current is not None and current.expires_at > now:
        raise locked_error(env, current, now)
    return replace(info, since=now, expires_at=now + ttl), current


def decide_renew(
    env: str, current: LockInfo | None, holder_id: str, ttl: float, now: float
) -> LockInfo:
    """Our lease extended, or LockedError when it was released, broken or taken over."""
    if current is None:
        raise LockedError(
            f"the lock of environment {env!r} is no longer held by {holder_id}: it was "
            "released or broken"
        )
    if current.holder_id != holder_id:
        raise locked_error(env, current, now, prefix=f"{holder_id} lost the lock: ")
    return replace(current, expires_at=now + ttl)


class EventDraft(NamedTuple):
    """An event a store appends on its own behalf (lock take-over, lock broken)."""

    kind: str
    message: str
    actor: str | None
    data: dict[str, Any]


def taken_over_event(new: LockInfo, old: LockInfo, now: float) -> EventDraft:
    return EventDraft(
        kind="lock.taken_over",
        message=f"lock taken over by {new.describe()} from {old.describe()}, whose lease "
        f"expired at {human_time(old.expires_at, now)}",
        actor=f"{new.user}@{new.host}",
        data={"previous": asdict(old), "holder": asdict(new)},
    )


def broken_event(old: LockInfo, now: float) -> EventDraft:
    return EventDraft(
        kind="lock.broken",
        message=f"lock broken; it was held by {old.describe()} since {human_time(old.since, now)}",
        actor=None,
        data={"previous": asdict(old)},
    )


# --- the in-memory store -----------------------------------------------------------------


@dataclass
class _EnvData:
    releases: dict[str, list[Release]] = field(default_factory=dict)
    services: dict[str, ServiceRecord] = field(default_factory=dict)
    instances: dict[str, InstanceRecord] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    journal: dict[int, JournalEntry] = field(default_factory=dict)
    applies: dict[str, ApplyRecord] = field(default_factory=dict)
    lock: LockInfo | None = None
    agent: AgentRecord | None = None
    secrets: dict[str, list[SecretVersion]] = field(default_factory=dict)


class MemoryBackend:
    """The data behind in-memory stores; share one to model several stores on one database."""

    def __init__(self) -> None:
        self.mutex = threading.RLock()  # the agent may call from worker threads
        self._envs: dict[str, _EnvData] = {}

    def data(self, env: str) -> _EnvData:
        return self._envs.setdefault(env, _EnvData())


class InMemoryStateStore:
    """A `StateStore` in process memory, with the same behaviour as the SQL store."""

    def __init__(
        self, env: str = "dev", *, shared: MemoryBackend | None = None, clock: Clock = time.time
    ) -> None:
        self.env = env
        self._backend = shared if shared is not None else MemoryBackend()
        self._clock = clock

    @property
    def _data(self) -> _EnvData:
        return self._backend.data(self.env)

    def _next(self, counter: str) -> int:
        data = self._data
        data.counters[counter] = value = data.counters.get(counter, 0) + 1
        return value

    def _has_release(self, service: str, number: int) -> bool:
        return any(r.number == number for r in self._data.releases.get(service, []))

    # releases

    def get_or_create_release(
        self,
        service: str,
        image_digest: str,
        config_hash: str,
        config: dict[str, Any],
        created_by: str,
    ) -> Release:
        with self._backend.mutex:
            known = self._data.releases.setdefault(service, [])
            for release in known:
                if (release.image_digest, release.config_hash) == (image_digest, config_hash):
                    return detached(release)
            release = Release(
                service=service,
                number=max((r.number for r in known), default=0) + 1,
                image_digest=image_digest,
                config_hash=config_hash,
                config=json_copy(config, f"the config of a {service} release"),
                created_at=self._clock(),
                created_by=created_by,
            )
            known.append(release)
            return detached(release)

    def get_release(self, service: str, number: int) -> Release | None:
        with self._backend.mutex:
            for release in self._data.releases.get(service, []):
                if release.number == number:
                    return detached(release)
            return None

    def list_releases(self, service: str) -> list[Release]:
        with self._backend.mutex:
            known = self._data.releases.get(service, [])
            return [detached(r) for r in sorted(known, key=lambda r: r.number)]

    def releases_in_use(self) -> list[Release]:
        with self._backend.mutex:
            data = self._data
            wanted = {(s.name, s.current_release) for s in data.services.values()}
            wanted |= {
                (i.service, i.release) for i in data.instances.values() if i.state in LIVE_STATES
            }
            found = [
                detached(r)
                for known in data.releases.values()
                for r in known
                if (r.service, r.number) in wanted
            ]
        return sorted(found, key=lambda r: (r.service, r.number))

    # services

    def put_service(self, record: ServiceRecord) -> None:
        with self._backend.mutex:
            number = record.current_release
            if number is not None and not self._has_release(record.name, number):
                raise missing_release(self.env, record.name, number, f"service {record.name}")
            self._data.services[record.name] = detached(record)

    def get_service(self, name: str) -> ServiceRecord | None:
        with self._backend.mutex:
            record = self._data.services.get(name)
            return detached(record) if record is not None else None

    def list_services(self) -> list[ServiceRecord]:
        with self._backend.mutex:
            services = self._data.services
            return [detached(services[name]) for name in sorted(services)]

    def delete_service(self, name: str) -> None:
        with self._backend.mutex:
            self._data.services.pop(name, None)

    # instances

    def new_instance_id(self, service: str) -> str:
        with self._backend.mutex:
            return f"{service}-{self._next(f'instance:{service}')}"

    def put_instance(self, record: InstanceRecord) -> None:
        record = replace(record, state=InstanceState(record.state))
        with self._backend.mutex:
            if not self._has_release(record.service, record.release):
                raise missing_release(
                    self.env, record.service, record.release, f"instance {record.id}"
                )
            check_instance_update(self._data.instances.get(record.id), record)
            self._data.instances[record.id] = record

    def get_instance(self, instance_id: str) -> InstanceRecord | None:
        with self._backend.mutex:
            return self._data.instances.get(instance_id)

    def list_instances(
        self, service: str | None = None, *, include_gone: bool = False
    ) -> list[InstanceRecord]:
        with self._backend.mutex:
            found = [
                r
                for r in self._data.instances.values()
                if (service is None or r.service == service)
                and (include_gone or r.state in LIVE_STATES)
            ]
        return sorted(found, key=instance_order)

    # events

    def append_event(
        self,
        kind: str,
        message: str,
        *,
        service: str | None = None,
        actor: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        with self._backend.mutex:
            event = Event(
                seq=self._next("event"),
                ts=self._clock(),
                kind=kind,
                message=message,
                service=service,
                actor=actor,
                data=json_copy(data or {}, f"the data of a {kind} event"),
            )
            self._data.events.append(event)
            return detached(event)

    def _append_draft(self, draft: EventDraft) -> None:
        self.append_event(draft.kind, draft.message, actor=draft.actor, data=draft.data)

    def list_events(
        self, *, service: str | None = None, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]:
        with self._backend.mutex:
            found = [
                e
                for e in self._data.events
                if e.seq > after_seq and (service is None or e.service == service)
            ]
            return [detached(e) for e in found[: max(limit, 0)]]

    # journal

    def journal_begin(
        self, kind: str, data: dict[str, Any], *, apply_id: str | None = None
    ) -> JournalEntry:
        with self._backend.mutex:
            entry = JournalEntry(
                seq=self._next("journal"),
                ts=self._clock(),
                apply_id=apply_id,
                kind=kind,
                data=json_copy(data, f"the data of a {kind} journal entry"),
                status=JournalStatus.PENDING,
            )
            self._data.journal[entry.seq] = entry
            return detached(entry)

    def journal_finish(self, seq: int, *, aborted: bool = False) -> None:
        with self._backend.mutex:
            entry = self._data.journal.get(seq)
            status = journal_transition(
                self.env, seq, entry.status if entry else None, aborted=aborted
            )
            if entry is not None and status is not None:
                self._data.journal[seq] = replace(entry, status=status)

    def journal_pending(self) -> list[JournalEntry]:
        with self._backend.mutex:
            journal = self._data.journal
            return [
                detached(journal[seq])
                for seq in sorted(journal)
                if journal[seq].status == JournalStatus.PENDING
            ]

    # applies

    def create_apply(self, record: ApplyRecord) -> None:
        with self._backend.mutex:
            if record.id in self._data.applies:
                raise StateError(f"apply {record.id} already exists in environment {self.env!r}")
            self._data.applies[record.id] = detached(
                replace(record, status=ApplyStatus(record.status))
            )

    def update_apply(
        self, apply_id: str, *, status: ApplyStatus, result: dict[str, Any] | None = None
    ) -> None:
        with self._backend.mutex:
            record = self._data.applies.get(apply_id)
            if record is None:
                raise StateError(f"no apply {apply_id} in environment {self.env!r}")
            status = ApplyStatus(status)
            self._data.applies[apply_id] = replace(
                record,
                status=status,
                finished_at=None if status == ApplyStatus.RUNNING else self._clock(),
                result=record.result
                if result is None
                else json_copy(result, f"the result of apply {apply_id}"),
            )

    def get_apply(self, apply_id: str) -> ApplyRecord | None:
        with self._backend.mutex:
            record = self._data.applies.get(apply_id)
            return detached(record) if record is not None else None

    def list_applies(self, *, status: ApplyStatus | None = None) -> list[ApplyRecord]:
        with self._backend.mutex:
            found = [
                detached(r)
                for r in self._data.applies.values()
                if status is None or r.status == status
            ]
        return sorted(found, key=lambda r: (r.created_at, r.id))

    # lock lease

    def acquire_lock(self, info: LockInfo, ttl: float) -> LockInfo:
        with self._backend.mutex:
            now = self._clock()
            held, replaced = decide_acquire(self.env, self._data.lock, info, ttl, now)
            self._data.lock = held
            if replaced is not None:
                self._append_draft(taken_over_event(held, replaced, now))
            return held

    def renew_lock(self, holder_id: str, ttl: float) -> LockInfo:
        with self._backend.mutex:
            held = decide_renew(self.env, self._data.lock, holder_id, ttl, self._clock())
            self._data.lock = held
            return held

    def release_lock(self, holder_id: str) -> None:
        with self._backend.mutex:
            lock = self._data.lock
            if lock is not None and lock.holder_id == holder_id:
                self._data.lock = None

    def get_lock(self) -> LockInfo | None:
        with self._backend.mutex:
            return self._data.lock

    def break_lock(self) -> LockInfo | None:
        with self._backend.mutex:
            old, self._data.lock = self._data.lock, None
            if old is not None:
                self._append_draft(broken_event(old, self._clock()))
            return old

    # agent ownership

    def register_agent(self, record: AgentRecord) -> None:
        with self._backend.mutex:
            self._data.agent = record

    def get_agent(self) -> AgentRecord | None:
        with self._backend.mutex:
            return self._data.agent

    def clear_agent(self, agent_id: str) -> None:
        with self._backend.mutex:
            agent = self._data.agent
            if agent is not None and agent.agent_id == agent_id:
                self._data.agent = None

    # secrets

    def put_secret(
        self, name: str, ciphertext: str, key_id: str, *, created_by: str, keep: int = 10
    ) -> SecretVersion:
        with self._backend.mutex:
            record = SecretVersion(
                name=name,
                version=self._next(f"secret:{name}"),
                ciphertext=ciphertext,
                key_id=key_id,
                created_at=self._clock(),
                created_by=created_by,
            )
            kept = [*self._data.secrets.get(name, []), record]
            self._data.secrets[name] = kept[-max(keep, 1) :]
            return record

    def get_secret(self, name: str, version: int | None = None) -> SecretVersion | None:
        with self._backend.mutex:
            kept = self._data.secrets.get(name, [])
            if version is None:
                return kept[-1] if kept else None
            return next((r for r in kept if r.version == version), None)

    def list_secrets(self) -> list[SecretVersion]:
        with self._backend.mutex:
            return [r for name in sorted(self._data.secrets) for r in self._data.secrets[name]]

    def delete_secret(self, name: str) -> int:
        with self._backend.mutex:
            return len(self._data.secrets.pop(name, []))

    def close(self) -> None:
        """Nothing to release: the data lives as long as its backend."""
