"""The records the state store keeps. Plain frozen dataclasses: the store decides nothing."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SecretVersion:
    """One stored version of a secret: only ciphertext, never the value (law 5).

    `key_id` names the key it was encrypted with (a keyed hash, not the key), so a wrong key
    is told apart from a damaged record. Versions are numbered per name and never reused."""

    name: str
    version: int
    ciphertext: str
    key_id: str
    created_at: float
    created_by: str


@dataclass(frozen=True)
class Release:
    """An immutable (image digest, config hash) of a service, numbered r1, r2, … (law 3)."""

    service: str
    number: int
    image_digest: str
    config_hash: str
    config: dict[str, Any]
    created_at: float
    created_by: str

    @property
    def name(self) -> str:
        return f"r{self.number}"


class InstanceState(enum.StrEnum):
    PENDING = "pending"  # recorded before the driver is asked to start it (write-ahead)
    RUNNING = "running"  # the driver started it
    STOPPING = "stopping"  # recorded before the driver is asked to stop it
    STOPPED = "stopped"  # gone for good; the id is never reused
    FAILED = "failed"  # never came up, or died; kept for history


LIVE_STATES = frozenset({InstanceState.PENDING, InstanceState.RUNNING, InstanceState.STOPPING})


@dataclass(frozen=True)
class InstanceRecord:
    """One copy of a release. `id` is unique and never reused; `serial` is its slot."""

    id: str
    service: str
    serial: int
    release: int
    state: InstanceState
    address: str | None = None  # "127.0.0.1:41234" once started
    driver_ref: str | None = None  # e.g. "pid:1234:1732431234.56" or a container id
    created_at: float = 0.0
    updated_at: float = 0.0
    reason: str | None = None  # why it stopped or failed


@dataclass(frozen=True)
class ServiceRecord:
    """What the fleet of one service should be, as last applied."""

    name: str
    current_release: int | None  # None while the first roll-out has not succeeded
    replicas: int
    route_port: int | None
    settings: dict[str, Any] = field(default_factory=dict)  # strategy, drain, stop grace, route
    updated_at: float = 0.0


@dataclass(frozen=True)
class Event:
    """One line of the append-only trail."""

    seq: int
    ts: float
    kind: str
    message: str
    service: str | None = None
    actor: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class JournalStatus(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True)
class JournalEntry:
    """A change announced before it is done (law 7)."""

    seq: int
    ts: float
    apply_id: str | None
    kind: str
    data: dict[str, Any]
    status: JournalStatus


class ApplyStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # tried and rolled back
    ABORTED = "aborted"


@dataclass(frozen=True)
class ApplyRecord:
    """One apply: its target fleet, who asked, how it ended."""

    id: str
    status: ApplyStatus
    target: dict[str, Any]
    holder: dict[str, Any]
    created_at: float
    finished_at: float | None = None
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LockInfo:
    """Who holds an environment's lock, for what, since when, until when (a lease)."""

    holder_id: str  # unique per holder (agent id)
    user: str
    host: str
    pid: int
    command: str
    message: str = ""
    operation: str = ""
    since: float = 0.0
    expires_at: float = 0.0

    def describe(self) -> str:
        what = f" running `{self.command}`" if self.command else ""
        why = f" ({self.message})" if self.message else ""
        return f"{self.user}@{self.host} (pid {self.pid}){what}{why}"


@dataclass(frozen=True)
class AgentRecord:
    """The one agent that runs an environment."""

    agent_id: str
    host: str
    pid: int
    home: str
    socket: str
    started_at: float
    heartbeat_at: float
    api: str = ""  # its HTTP API's URL for other hosts and homes (--ui-port); '' when none
