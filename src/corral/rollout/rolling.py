"""The rolling strategy: replace instances a few at a time within max_surge/max_unavailable.

Level-triggered: every decision is taken from the current fleet, so a roll-out resumed after a
crash (law 7) simply continues from whatever instances exist. A new instance takes the serial
of the old one it replaces, so serials stay 0..replicas-1.
"""

from __future__ import annotations

from corral.rollout.steps import (
    AwaitReady,
    Completed,
    Failed,
    Fleet,
    Member,
    Retire,
    Start,
    Strategy,
)
from corral.spec.model import resolve_count


def rolling(
    target: int,
    replicas: int,
    fleet: Fleet,
    *,
    max_surge: int | str = 1,
    max_unavailable: int | str = 0,
    max_steps: int = 100_000,
) -> Strategy:
    surge = resolve_count(max_surge, replicas, round_up=True)
    unavailable = resolve_count(max_unavailable, replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        # both rounded to 0 (e.g. small percentages): allow one surge so progress is possible
        surge = 1
    awaited: set[str] = set()
    for _ in range(max_steps):
        new = fleet.of(target)
        old = fleet.not_of(target)

        dead = [m for m in fleet.members if not m.alive]
        if dead:
            fleet = yield Retire(_ids(dead), reason="exited")
            continue

        unready_new = [m for m in new if not m.ready]
        failed = [m for m in unready_new if m.id in awaited]
        if failed:
            return Failed(
                f"{len(failed)} instance(s) of r{target} never became healthy", _ids(failed)
            )

        # more new instances than wanted (scale down): retire the highest serials first
        if len(new) > replicas:
            extra = sorted(new, key=lambda m: (m.ready, -m.serial))[: len(new) - replicas]
            fleet = yield Retire(_ids(extra), reason="scale down")
            continue

        ready_total = sum(1 for m in fleet.members if m.ready)
        min_available = max(0, replicas - unavailable)
        total = len(fleet.members)

        # old instances that are not ready serve nothing: retire them without counting
        unready_old = [m for m in old if not m.ready]
        if unready_old:
            fleet = yield Retire(_ids(unready_old), reason="superseded (not ready)")
            continue

        if old:
            can_stop = min(len(old), ready_total - min_available)
            if can_stop > 0:
                victims = _pick_old(old, new, can_stop)
                fleet = yield Retire(_ids(victims), reason=f"replaced by r{target}")
                continue

        to_start = min(replicas - len(new), replicas + surge - total)
        if to_start > 0:
            serials = _free_serials(new, old, replicas, to_start)
            fleet = yield Start(target, tuple(serials))
            continue

        pending = [m for m in unready_new if m.id not in awaited]
        if pending:
            awaited.update(m.id for m in pending)
            fleet = yield AwaitReady(_ids(pending))
            continue

        if not old and len(new) == replicas and not unready_new:
            return Completed()
        if not unready_new:
            # no room to start and nothing may stop: only possible with inconsistent inputs
            return Failed("roll-out cannot progress within max_surge/max_unavailable")
        # unready new ones have been awaited already and were not failed: wait again
        fleet = yield AwaitReady(_ids(unready_new))
    return Failed("roll-out did not converge")


def _ids(members: list[Member]) -> tuple[str, ...]:
    return tuple(m.id for m in members)


def _pick_old(old: list[Member], new: list[Member], count: int) -> list[Member]:
    """Old instances whose serial already has a ready replacement go first, then the highest."""
    replaced = {m.serial for m in new if m.ready}
    ranked = sorted(old, key=lambda m: (m.serial not in replaced, -m.serial))
    return ranked[:count]


def _free_serials(new: list[Member], old: list[Member], replicas: int, count: int) -> list[int]:
    """Serials for new instances: free slots first, then those of old ones awaiting replacement."""
    taken = {m.serial for m in new}
    held_by_old = {m.serial for m in old}
    free = [s for s in range(replicas) if s not in taken and s not in held_by_old]
    awaiting = [s for s in sorted(held_by_old) if s not in taken and s < replicas]
    return (free + awaiting)[:count]
