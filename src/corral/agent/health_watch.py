"""The agent's watch over started instances: readiness routes them, liveness replaces them.

An instance is watched from when it first became ready (so its startup check has passed:
liveness is never judged before) until it stops or dies. Each of its checks runs in a task of
its own at its own interval, but no more often than the agent's tick, so a slow probe of one
instance never delays another or the supervisor. Verdicts are `rollout.health`'s (pure); this
module only probes and acts: out of routing, back in, or dead (law 8: the supervisor's heal
replaces it, and the event says which check failed and how).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from corral.rollout.book import InstanceBook
from corral.rollout.health import (
    HealthCheck,
    Streak,
    Verdict,
    judge_liveness,
    judge_readiness,
    probe,
)
from corral.state.records import InstanceRecord, InstanceState

log = logging.getLogger("corral.agent")

CheckOf = Callable[[InstanceRecord], HealthCheck]  # the bound checks of an instance's release
Current = Callable[[str], InstanceRecord | None]  # an instance's record as the store has it now
SyncRoutes = Callable[[str], Awaitable[None]]
Emit = Callable[..., None]


class HealthWatch:
    def __init__(
        self,
        *,
        book: InstanceBook,
        check_of: CheckOf,
        current: Current,
        sync_routes: SyncRoutes,
        emit: Emit,
        min_interval: float,
    ) -> None:
        self.book = book
        self.check_of = check_of
        self.current = current
        self.sync_routes = sync_routes
        self.emit = emit
        self.min_interval = min_interval
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}

    def watched(self) -> set[str]:
        return set(self._tasks)

    def sync(self, records: Iterable[InstanceRecord]) -> None:
        """Watch every running instance that became ready; stop watching the others."""
        keep: set[str] = set()
        for record in records:
            if not self._watchable(record):
                continue
            if record.id not in self._tasks and record.id not in self.book.ready:
                continue  # still starting: the executor waits for startup and readiness
            keep.add(record.id)
            if record.id not in self._tasks:
                self._tasks[record.id] = self._start(record)
        for instance_id in set(self._tasks) - keep:
            self._cancel(instance_id)

    def close(self) -> None:
        for instance_id in list(self._tasks):
            self._cancel(instance_id)

    # -- one instance ----------------------------------------------------------------------

    def _watchable(self, record: InstanceRecord | None) -> bool:
        return (
            record is not None
            and record.state is InstanceState.RUNNING
            and bool(record.address)
            and record.id not in self.book.dead
        )

    def _start(self, record: InstanceRecord) -> list[asyncio.Task[None]]:
        check = self.check_of(record)
        tasks = [asyncio.create_task(self._readiness(record, check), name=f"ready-{record.id}")]
        if check.liveness is not None:
            tasks.append(
                asyncio.create_task(
                    self._liveness(record, check.liveness), name=f"live-{record.id}"
                )
            )
        return tasks

    def _cancel(self, instance_id: str) -> None:
        for task in self._tasks.pop(instance_id, []):
            task.cancel()

    async def _next(self, record: InstanceRecord, check: HealthCheck, streak: Streak) -> str | None:
        """Wait an interval, probe once and count it; the probe's detail, or None when the
        instance was retired or died meanwhile (it is not ours to judge any more)."""
        await asyncio.sleep(max(check.interval, self.min_interval))
        outcome = await probe(record.address or "", check)
        streak.record(outcome.ok)
        return outcome.detail if self._watchable(self.current(record.id)) else None

    async def _readiness(self, record: InstanceRecord, check: HealthCheck) -> None:
        streak = Streak()
        while (detail := await self._next(record, check, streak)) is not None:
            verdict = judge_readiness(check, streak, routed=record.id in self.book.ready)
            if verdict is Verdict.DEAD:
                await self._dead(record, "readiness", check, streak, detail)
                return
            if verdict is Verdict.UNREADY:
                self.book.mark_unready(record.id, f"readiness failed: {detail}")
                self._say("instance.unready", record, f"out of routing ({detail})")
                await self._routes(record.service)
            elif verdict is Verdict.READY:
                self.book.mark_ready(record.id, detail)
                self._say("instance.ready", record, "ready again; back in routing")
                await self._routes(record.service)

    async def _liveness(self, record: InstanceRecord, liveness: HealthCheck) -> None:
        streak = Streak()
        while (detail := await self._next(record, liveness, streak)) is not None:
            if judge_liveness(liveness, streak) is Verdict.DEAD:
                await self._dead(record, "liveness", liveness, streak, detail)
                return

    async def _dead(
        self, record: InstanceRecord, role: str, check: HealthCheck, streak: Streak, error: str
    ) -> None:
        """Replace, don't repair (law 8): dead now, out of routing, healed on the next tick."""
        self.book.mark_dead(record.id, f"liveness failed ({role} {check.describe()}): {error}")
        self.emit(
            "instance.unhealthy",
            f"{record.id} (r{record.release}) failed {streak.failures} {role} probes in a row "
            f"({check.describe()}: {error}); out of routing, to be replaced",
            service=record.service,
            data={
                "instance": record.id,
                "release": record.release,
                "reason": "liveness",
                "check": f"{role} {check.describe()}",
                "error": error,
                "failures": streak.failures,
            },
        )
        for task in self._tasks.pop(record.id, []):
            if task is not asyncio.current_task():  # this one ends by returning
                task.cancel()
        await self._routes(record.service)

    def _say(self, kind: str, record: InstanceRecord, what: str) -> None:
        self.emit(
            kind,
            f"{record.id} (r{record.release}) {what}",
            service=record.service,
            data={"instance": record.id, "release": record.release},
        )

    async def _routes(self, service: str) -> None:
        try:
            await self.sync_routes(service)
        except Exception:  # routing catches up on the supervisor's next tick anyway
            log.exception("syncing the routes of %s failed", service)
