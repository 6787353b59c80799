"""Building blocks shared by strategies: bring a release to N ready instances, retire others."""

from __future__ import annotations

from collections.abc import Generator

from corral.rollout.steps import AwaitReady, Failed, Fleet, Member, Retire, Start, Step


def _ids(members: list[Member]) -> tuple[str, ...]:
    return tuple(m.id for m in members)


def ensure_ready(target: int, count: int, fleet: Fleet) -> Generator[Step, Fleet, Fleet | Failed]:
    """Start instances of `target` until `count` exist, and wait until all of them are ready.

    Dead members are retired first. Returns the fleet, or Failed when a new one never got
    ready. Serials: free slots first, then the lowest not held by the target release."""
    awaited: set[str] = set()
    while True:
        dead = [m for m in fleet.members if not m.alive]
        if dead:
            fleet = yield Retire(_ids(dead), reason="exited")
            continue
        new = fleet.of(target)
        failed = [m for m in new if not m.ready and m.id in awaited]
        if failed:
            return Failed(
                f"{len(failed)} instance(s) of r{target} never became healthy", _ids(failed)
            )
        if len(new) > count:
            extra = sorted(new, key=lambda m: (m.ready, -m.serial))[: len(new) - count]
            fleet = yield Retire(_ids(extra), reason="scale down")
            continue
        if len(new) < count:
            taken = {m.serial for m in new}
            serials = [s for s in range(max(count, len(fleet.members) + count)) if s not in taken]
            fleet = yield Start(target, tuple(serials[: count - len(new)]))
            continue
        pending = [m for m in new if not m.ready]
        if not pending:
            return fleet
        awaited.update(m.id for m in pending)
        fleet = yield AwaitReady(_ids(pending))


def retire_others(target: int, fleet: Fleet) -> Generator[Step, Fleet, Fleet]:
    others = fleet.not_of(target)
    if others:
        fleet = yield Retire(_ids(others), reason=f"replaced by r{target}")
    return fleet
