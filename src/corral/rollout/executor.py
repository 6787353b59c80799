"""Performs a strategy's steps through the Driver and the Router; rolls back on failure.

The executor is the only place where a roll-out touches the world, and it does so only through
the `Driver` (start/stop), the `Router` (routed set, drain) and the `StateStore` (write-ahead
records): it never spawns a process or opens a socket itself. Every instance is recorded as
PENDING before the driver starts it and as STOPPING before the driver stops it (law 7), so a
crash at any point leaves records from which the next agent converges.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from corral.drivers.protocol import Driver, LaunchSpec
from corral.errors import DriverError
from corral.rollout.book import InstanceBook
from corral.rollout.health import HealthCheck, ProbeResult, wait_ready
from corral.rollout.rolling import rolling
from corral.rollout.steps import (
    AwaitReady,
    Completed,
    Failed,
    Fleet,
    Member,
    Outcome,
    Retire,
    Start,
    Step,
    Strategy,
)
from corral.router.protocol import Backend, Router
from corral.state.protocol import StateStore
from corral.state.records import InstanceRecord, InstanceState, Release

Emit = Callable[..., None]  # emit(kind, message, *, service=None, data=None)
ReadyCheck = Callable[[str, HealthCheck], Awaitable[ProbeResult]]
Fault = Callable[[str], None]  # fault(point): test hook that may kill the process (law 7 tests)


@dataclass(frozen=True)
class ServiceTarget:
    """Where one service should end up: a release, a replica count, and its settings."""

    name: str
    replicas: int
    settings: dict[str, Any]

    @property
    def max_surge(self) -> int | str:
        value: int | str = self.settings.get("strategy", {}).get("max_surge", 1)
        return value

    @property
    def max_unavailable(self) -> int | str:
        value: int | str = self.settings.get("strategy", {}).get("max_unavailable", 0)
        return value

    @property
    def stop_grace(self) -> float:
        return float(self.settings.get("stop_grace", 5.0))

    @property
    def drain_timeout(self) -> float:
        return float(self.settings.get("drain_timeout", 10.0))


@dataclass
class RolloutResult:
    ok: bool
    release: int | None
    reason: str = ""
    rolled_back_to: int | None = None
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    first_start_at: float | None = None
    last_stop_at: float | None = None
    requests: int = 0
    failed_requests: int = 0

    ended_at: float | None = None

    @property
    def seconds(self) -> float:
        """From the first new instance started to the last old one stopped (or the end)."""
        if self.first_start_at is None:
            return 0.0
        end = self.last_stop_at or self.ended_at or self.first_start_at
        return max(0.0, end - self.first_start_at)


class StartFailed(Exception):
    def __init__(self, reason: str, instance_ids: tuple[str, ...]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.instance_ids = instance_ids


class Executor:
    def __init__(
        self,
        *,
        store: StateStore,
        driver: Driver,
        router: Router,
        book: InstanceBook,
        project: str,
        environment: str,
        emit: Emit,
        fault: Fault | None = None,
        actor: str = "corral",
        ready_check: ReadyCheck = wait_ready,
    ) -> None:
        self.store = store
        self.driver = driver
        self.router = router
        self.book = book
        self.project = project
        self.environment = environment
        self.emit = emit
        self.fault = fault or (lambda point: None)
        self.actor = actor
        self.ready_check = ready_check
        self.apply_id: str | None = None

    # -- fleet view -------------------------------------------------------------------------

    def fleet(self, service: str) -> Fleet:
        members = []
        for record in self.store.list_instances(service):
            if record.state is InstanceState.STOPPING:
                continue
            members.append(
                Member(
                    id=record.id,
                    serial=record.serial,
                    release=record.release,
                    ready=record.id in self.book.ready,
                    alive=record.id not in self.book.dead,
                )
            )
        return Fleet(tuple(members))

    async def sync_routes(self, service: str) -> None:
        """The routed set is exactly the ready, live, recorded instances (law 6)."""
        if service not in self.router.routes():
            return
        backends = []
        for record in self.store.list_instances(service):
            if (
                record.state is InstanceState.RUNNING
                and record.id in self.book.ready
                and record.address
            ):
                host, _, port = record.address.rpartition(":")
                backends.append(Backend(record.id, f"r{record.release}", host, int(port)))
        await self.router.set_backends(service, backends)

    # -- roll-out ---------------------------------------------------------------------------

    async def converge(
        self, target: ServiceTarget, release: Release, previous: Release | None
    ) -> RolloutResult:
        """Move the service to `release` (all replicas); on failure roll back to `previous`."""
        result = RolloutResult(ok=False, release=release.number)
        before = self._route_counts(target.name)
        outcome = await self._run(
            target,
            release,
            rolling(
                release.number,
                target.replicas,
                self.fleet(target.name),
                max_surge=target.max_surge,
                max_unavailable=target.max_unavailable,
            ),
            result,
        )
        if isinstance(outcome, Completed):
            result.ok = True
        else:
            result.reason = outcome.reason
            self.emit(
                "rollout.failed",
                f"{target.name}: r{release.number} failed: {outcome.reason}",
                service=target.name,
                data={"release": release.number, "reason": outcome.reason},
            )
            result.rolled_back_to = await self._roll_back(target, release, previous, result)
        result.ended_at = time.time()
        after = self._route_counts(target.name)
        result.requests = after[0] - before[0]
        result.failed_requests = after[1] - before[1]
        return result

    async def heal(self, target: ServiceTarget, release: Release) -> RolloutResult:
        """Replace dead or missing instances from the same release (law 8).

        Never rolls back and never touches healthy instances: a replacement that does not
        come up is reported, and the caller backs off before trying again."""
        result = RolloutResult(ok=False, release=release.number)
        outcome = await self._run(
            target,
            release,
            rolling(
                release.number,
                target.replicas,
                self.fleet(target.name),
                max_surge=max(1, target.replicas),
                max_unavailable=0,
            ),
            result,
        )
        result.ok = isinstance(outcome, Completed)
        if isinstance(outcome, Failed):
            result.reason = outcome.reason
            # a replacement that never became healthy serves nothing: stop it, keep the rest
            broken = [m.id for m in self.fleet(target.name).members if not m.ready]
            if broken:
                await self._retire(target, tuple(broken), "replacement not healthy", result)
        result.ended_at = time.time()
        return result

    async def _roll_back(
        self,
        target: ServiceTarget,
        failed: Release,
        previous: Release | None,
        result: RolloutResult,
    ) -> int | None:
        if previous is None or previous.number == failed.number:
            members = self.fleet(target.name).of(failed.number)
            if members:
                await self._retire(target, tuple(m.id for m in members), "roll-out failed", result)
            return None
        self.emit(
            "rollout.rollback",
            f"{target.name}: rolling back to r{previous.number}",
            service=target.name,
            data={"from": failed.number, "to": previous.number},
        )
        outcome = await self._run(
            target,
            previous,
            rolling(
                previous.number,
                target.replicas,
                self.fleet(target.name),
                max_surge=max(1, target.replicas),
                max_unavailable=0,
            ),
            result,
        )
        if isinstance(outcome, Failed):
            self.emit(
                "rollout.rollback_failed",
                f"{target.name}: rollback to r{previous.number} failed: {outcome.reason}",
                service=target.name,
            )
            return None
        return previous.number

    async def retire_all(self, target: ServiceTarget, reason: str) -> RolloutResult:
        result = RolloutResult(ok=True, release=None)
        members = self.fleet(target.name).members
        stopping = [r.id for r in self.store.list_instances(target.name)]
        ids = tuple(dict.fromkeys([m.id for m in members] + stopping))
        if ids:
            await self._retire(target, ids, reason, result)
        return result

    async def _run(
        self, target: ServiceTarget, release: Release, strategy: Strategy, result: RolloutResult
    ) -> Outcome:
        try:
            step: Step = next(strategy)
            while True:
                try:
                    await self._perform(target, release, step, result)
                except StartFailed as exc:
                    return Failed(exc.reason, exc.instance_ids)
                await self.sync_routes(target.name)
                step = strategy.send(self.fleet(target.name))
        except StopIteration as stop:
            outcome: Outcome = stop.value
            return outcome

    async def _perform(
        self, target: ServiceTarget, release: Release, step: Step, result: RolloutResult
    ) -> None:
        if isinstance(step, Start):
            await self._start(target, release, step.serials, result)
        elif isinstance(step, AwaitReady):
            await self._await_ready(target, release, step.instance_ids)
        elif isinstance(step, Retire):
            await self._retire(target, step.instance_ids, step.reason, result)

    async def _start(
        self,
        target: ServiceTarget,
        release: Release,
        serials: tuple[int, ...],
        result: RolloutResult,
    ) -> None:
        if result.first_start_at is None:
            result.first_start_at = time.time()
        outcomes = await asyncio.gather(
            *(self._start_one(target, release, serial) for serial in serials),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        for outcome in outcomes:
            if isinstance(outcome, str):
                result.started.append(outcome)
        if failures:
            first = failures[0]
            if not isinstance(first, DriverError):
                raise first
            raise StartFailed(f"an instance of r{release.number} could not start: {first}", ())

    async def _start_one(self, target: ServiceTarget, release: Release, serial: int) -> str:
        instance_id = self.store.new_instance_id(target.name)
        now = time.time()
        record = InstanceRecord(
            id=instance_id,
            service=target.name,
            serial=serial,
            release=release.number,
            state=InstanceState.PENDING,
            created_at=now,
            updated_at=now,
        )
        entry = self.store.journal_begin(
            "instance.start",
            {"instance": instance_id, "service": target.name, "release": release.number},
            apply_id=self.apply_id,
        )
        self.store.put_instance(record)
        self.fault("instance.pending")
        config = release.config
        spec = LaunchSpec(
            instance_id=instance_id,
            project=self.project,
            environment=self.environment,
            service=target.name,
            serial=serial,
            release=release.number,
            image_digest=release.image_digest,
            command=config.get("command"),
            env=dict(config.get("env") or {}),
            port=int(config.get("port", 8080)),
        )
        try:
            observed = await self.driver.start(spec)
        except DriverError as exc:
            self.store.put_instance(
                replace(record, state=InstanceState.FAILED, updated_at=time.time(), reason=str(exc))
            )
            self.store.journal_finish(entry.seq, aborted=True)
            self.emit(
                "instance.failed",
                f"{instance_id} (r{release.number}) could not start: {exc}",
                service=target.name,
                data={"instance": instance_id, "release": release.number},
            )
            raise
        self.fault("instance.spawned")
        self.store.put_instance(
            replace(
                record,
                state=InstanceState.RUNNING,
                address=observed.address,
                driver_ref=observed.driver_ref,
                updated_at=time.time(),
            )
        )
        self.store.journal_finish(entry.seq)
        self.emit(
            "instance.started",
            f"{instance_id} (r{release.number}, serial {serial}) started at {observed.address}",
            service=target.name,
            data={"instance": instance_id, "release": release.number, "serial": serial},
        )
        self.fault("instance.started")
        return instance_id

    async def _await_ready(
        self, target: ServiceTarget, release: Release, instance_ids: tuple[str, ...]
    ) -> None:
        check = HealthCheck.from_config(release.config)
        records = [self.store.get_instance(i) for i in instance_ids]

        async def one(record: InstanceRecord | None) -> None:
            if record is None or not record.address:
                return
            outcome = await self.ready_check(record.address, check)
            if outcome.ok:
                self.book.mark_ready(record.id, outcome.detail)
                self.emit(
                    "instance.ready",
                    f"{record.id} (r{record.release}) is ready",
                    service=target.name,
                    data={"instance": record.id, "release": record.release},
                )
                # route each instance as soon as it is ready, not when the batch is
                await self.sync_routes(target.name)
            else:
                self.book.mark_unready(record.id, outcome.detail)
                self.emit(
                    "instance.unhealthy",
                    f"{record.id} (r{record.release}) {outcome.detail}",
                    service=target.name,
                    data={"instance": record.id, "release": record.release},
                )

        await asyncio.gather(*(one(r) for r in records))

    async def _retire(
        self,
        target: ServiceTarget,
        instance_ids: tuple[str, ...],
        reason: str,
        result: RolloutResult,
    ) -> None:
        records = [r for r in (self.store.get_instance(i) for i in instance_ids) if r]
        entries = []
        for record in records:
            entries.append(
                self.store.journal_begin(
                    "instance.stop",
                    {"instance": record.id, "service": target.name, "reason": reason},
                    apply_id=self.apply_id,
                )
            )
            self.store.put_instance(
                replace(record, state=InstanceState.STOPPING, updated_at=time.time())
            )
            self.book.mark_unready(record.id, "retiring")
        self.fault("instance.stopping")
        # out of routing first, then drain in-flight requests, then stop (law 6)
        await self.sync_routes(target.name)
        if target.name in self.router.routes():
            await self.router.drain(
                target.name, [r.id for r in records], timeout=target.drain_timeout
            )

        async def stop(record: InstanceRecord) -> None:
            await self.driver.stop(record.id, grace=target.stop_grace)
            await self.driver.forget(record.id)

        await asyncio.gather(*(stop(r) for r in records))
        now = time.time()
        for record, entry in zip(records, entries, strict=True):
            self.store.put_instance(
                replace(record, state=InstanceState.STOPPED, updated_at=now, reason=reason)
            )
            self.store.journal_finish(entry.seq)
            self.book.forget(record.id)
            result.stopped.append(record.id)
            self.emit(
                "instance.stopped",
                f"{record.id} (r{record.release}) stopped: {reason}",
                service=target.name,
                data={"instance": record.id, "release": record.release, "reason": reason},
            )
        result.last_stop_at = now
        self.fault("instance.stopped")

    def _route_counts(self, service: str) -> tuple[int, int]:
        if service not in self.router.routes():
            return (0, 0)
        stats = self.router.stats(service)
        return (stats.requests, stats.router_errors)
