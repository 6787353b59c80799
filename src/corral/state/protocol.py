"""The `StateStore` interface. Every implementation passes tests/conformance/test_state_store.py.

A store is bound to one environment (`env`): two stores on the same database with different
environments never see each other's releases, instances, events, journal, applies or lock.
A store records; it never decides.
"""

from __future__ import annotations

from typing import Any, Protocol

from corral.state.records import (
    AgentRecord,
    ApplyRecord,
    ApplyStatus,
    Event,
    InstanceRecord,
    JournalEntry,
    LockInfo,
    Release,
    SecretVersion,
    ServiceRecord,
)


class StateStore(Protocol):
    env: str

    # releases: numbered per service, never edited (law 3)
    def get_or_create_release(
        self,
        service: str,
        image_digest: str,
        config_hash: str,
        config: dict[str, Any],
        created_by: str,
    ) -> Release:
        """The release with this (digest, hash), creating it as r(max+1) when new."""
        ...

    def get_release(self, service: str, number: int) -> Release | None: ...
    def list_releases(self, service: str) -> list[Release]: ...  # oldest first

    def releases_in_use(self) -> list[Release]:
        """Every service's current release and every release a live instance runs, of all
        services in one read (the agent's status), sorted by service and number."""
        ...

    # services
    def put_service(self, record: ServiceRecord) -> None: ...
    def get_service(self, name: str) -> ServiceRecord | None: ...
    def list_services(self) -> list[ServiceRecord]: ...  # sorted by name
    def delete_service(self, name: str) -> None: ...

    # instances
    def new_instance_id(self, service: str) -> str:
        """A fresh id such as `web-7`, never handed out before in this environment."""
        ...

    def put_instance(self, record: InstanceRecord) -> None: ...  # insert or replace by id
    def get_instance(self, instance_id: str) -> InstanceRecord | None: ...
    def list_instances(
        self, service: str | None = None, *, include_gone: bool = False
    ) -> list[InstanceRecord]:
        """Live ones (pending/running/stopping), or all with include_gone.

        Sorted by service, serial, id."""
        ...

    # events: append-only
    def append_event(
        self,
        kind: str,
        message: str,
        *,
        service: str | None = None,
        actor: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event: ...

    def list_events(
        self, *, service: str | None = None, after_seq: int = 0, limit: int = 1000
    ) -> list[Event]: ...

    # write-ahead journal (law 7)
    def journal_begin(
        self, kind: str, data: dict[str, Any], *, apply_id: str | None = None
    ) -> JournalEntry: ...

    def journal_finish(self, seq: int, *, aborted: bool = False) -> None: ...
    def journal_pending(self) -> list[JournalEntry]: ...

    # applies
    def create_apply(self, record: ApplyRecord) -> None: ...
    def update_apply(
        self, apply_id: str, *, status: ApplyStatus, result: dict[str, Any] | None = None
    ) -> None: ...
    def get_apply(self, apply_id: str) -> ApplyRecord | None: ...
    def list_applies(self, *, status: ApplyStatus | None = None) -> list[ApplyRecord]: ...

    # lock lease
    def acquire_lock(self, info: LockInfo, ttl: float) -> LockInfo:
        """Take the lock; when held by another live lease raise LockedError naming the holder.

        An expired lease is taken over (and the take-over returned with `since` reset)."""
        ...

    def renew_lock(self, holder_id: str, ttl: float) -> LockInfo:
        """Extend our lease; raise LockedError if someone else holds it now."""
        ...

    def release_lock(self, holder_id: str) -> None: ...  # no-op when not ours
    def get_lock(self) -> LockInfo | None: ...  # expired leases are still returned
    def break_lock(self) -> LockInfo | None: ...  # unconditional; returns what was broken

    # agent ownership
    def register_agent(self, record: AgentRecord) -> None: ...
    def get_agent(self) -> AgentRecord | None: ...
    def clear_agent(self, agent_id: str) -> None: ...  # only if it is still that agent

    # secrets: ciphertext only, the last `keep` versions per name (law 5)
    def put_secret(
        self, name: str, ciphertext: str, key_id: str, *, created_by: str, keep: int = 10
    ) -> SecretVersion:
        """Store a new version (numbered past every earlier one, even deleted ones) and drop
        all but the newest `keep` versions of `name`."""
        ...

    def get_secret(self, name: str, version: int | None = None) -> SecretVersion | None:
        """That version, or the newest when `version` is None."""
        ...

    def list_secrets(self) -> list[SecretVersion]: ...  # every kept version, by name, version
    def delete_secret(self, name: str) -> int: ...  # every version; how many there were

    def close(self) -> None: ...
