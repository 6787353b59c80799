"""Instances an engine moves by itself (Swarm restarting a crashed task, or rescheduling one
off a lost node): out of routing at once, back in at their new address once probed ready.

The supervisor hands every observation of a running instance to `Moves.follow` first. An
instance observed PENDING leaves routing at once (law 6): its recorded address is cleared, so
nothing routes or probes the old one. When the engine has it running again, the new address is
recorded, the move is recorded as an event (node and address, old → new), and it is probed
like a fresh start before it is routed. One that stays away longer than its release's start
timeout, or fails that probe, is left to the supervisor as dead, and replaced (law 8).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from corral.drivers.protocol import ObservedInstance, ObservedState
from corral.rollout.book import InstanceBook
from corral.rollout.health import HealthCheck, wait_ready
from corral.state.protocol import StateStore
from corral.state.records import InstanceRecord

log = logging.getLogger("corral.agent")


@dataclass
class _Away:
    since: float  # monotonic
    address: str | None  # where it was routed before it left
    node: str | None


class Moves:
    def __init__(
        self,
        *,
        store: StateStore,
        book: InstanceBook,
        check_of: Callable[[InstanceRecord], HealthCheck],
        sync_routes: Callable[[str], Awaitable[None]],
        emit: Callable[..., None],
    ) -> None:
        self.store = store
        self.book = book
        self.check_of = check_of
        self.sync_routes = sync_routes
        self.emit = emit
        self._away: dict[str, _Away] = {}
        self._nodes: dict[str, str | None] = {}  # where each instance was last seen running
        self._probes: dict[str, asyncio.Task[None]] = {}

    def follow(self, record: InstanceRecord, seen: ObservedInstance | None) -> bool:
        """Handle a running record's observation when the engine is moving it (True: its
        service's routes are to be synced); False leaves it to the supervisor (running in
        place, exited, or away too long: then dead)."""
        if seen is None:
            return False
        away = self._away.get(record.id)
        if away is None and not record.address and seen.state is not ObservedState.EXITED:
            # it left routing under the agent before this one (which cleared its address
            # first, law 7, and said so): follow it on, do not take it for a fresh loss
            away = self._away[record.id] = _Away(time.monotonic(), None, None)
            self.book.mark_unready(record.id, "the engine is bringing it back")
        if away is None and seen.state is ObservedState.RUNNING and seen.address == record.address:
            self._nodes[record.id] = seen.node
        moved = (
            seen.state is ObservedState.RUNNING
            and bool(record.address)
            and (seen.address != record.address)
        )
        if seen.state is ObservedState.PENDING or (moved and away is None):
            if away is None:
                self._leave(record, seen)
                return True
            if time.monotonic() - away.since > self.check_of(record).start_timeout:
                self._forget(record.id)
                return False  # the supervisor marks it dead and the heal replaces it
            return True
        if away is not None and seen.state is ObservedState.RUNNING:
            if record.id not in self._probes:
                self._back(record, seen, away)
            return True
        if away is not None:  # exited while away: the supervisor's to judge
            self._forget(record.id)
        return False

    def close(self) -> None:
        for task in self._probes.values():
            task.cancel()
        self._probes.clear()

    def _leave(self, record: InstanceRecord, seen: ObservedInstance) -> None:
        node = self._nodes.pop(record.id, None)  # `seen` may already name its next node
        self._away[record.id] = _Away(time.monotonic(), record.address, node)
        self.book.mark_unready(record.id, "the engine is bringing it back")
        self.store.put_instance(replace(record, address=None, updated_at=time.time()))
        why = f"exit code {seen.exit_code}" if seen.exit_code is not None else "node lost or moving"
        self.emit(
            "instance.away",
            f"{record.id} (r{record.release}) stopped running on {node or 'its node'} "
            f"({why}); out of routing while the engine brings it back",
            service=record.service,
            data={"instance": record.id, "node": node, "address": record.address},
        )

    def _back(self, record: InstanceRecord, seen: ObservedInstance, away: _Away) -> None:
        self.store.put_instance(
            replace(
                record, address=seen.address, driver_ref=seen.driver_ref, updated_at=time.time()
            )
        )
        self.emit(
            "instance.moved",
            f"{record.id} (r{record.release}) runs again: {away.node or '?'} → "
            f"{seen.node or '?'}, {away.address or '?'} → {seen.address}; probing before routing",
            service=record.service,
            data={
                "instance": record.id,
                "from_node": away.node,
                "to_node": seen.node,
                "from_address": away.address,
                "to_address": seen.address,
            },
        )
        self._probes[record.id] = asyncio.create_task(
            self._probe(record, seen.address or ""), name=f"moved-{record.id}"
        )

    async def _probe(self, record: InstanceRecord, address: str) -> None:
        try:
            outcome = await wait_ready(address, self.check_of(record))
            if record.id not in self._away:
                return  # forgotten meanwhile (stopped, or judged by the supervisor)
            if outcome.ok:
                self.book.mark_ready(record.id, outcome.detail)
                self.emit(
                    "instance.ready",
                    f"{record.id} (r{record.release}) ready at {address}; back in routing",
                    service=record.service,
                    data={"instance": record.id, "release": record.release},
                )
            else:
                self.book.mark_dead(record.id, f"not ready after it moved: {outcome.detail}")
            await self.sync_routes(record.service)
        except Exception:
            log.exception("probing moved instance %s failed", record.id)
        finally:
            self._away.pop(record.id, None)
            self._probes.pop(record.id, None)

    def _forget(self, instance_id: str) -> None:
        self._away.pop(instance_id, None)
        self._nodes.pop(instance_id, None)
        task = self._probes.pop(instance_id, None)
        if task is not None:
            task.cancel()
