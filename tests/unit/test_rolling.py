"""The rolling strategy, step by step, with no process, socket or sleep."""

from __future__ import annotations

import itertools

import pytest

from corral.rollout.rolling import rolling
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


class Simulator:
    """Performs steps on plain data; records the fleet after every step."""

    def __init__(self, members: list[Member], *, unhealthy_release: int | None = None) -> None:
        self.members = {m.id: m for m in members}
        self.ids = itertools.count(100)
        self.unhealthy_release = unhealthy_release
        self.history: list[Fleet] = [self.fleet()]
        self.steps: list[object] = []

    def fleet(self) -> Fleet:
        return Fleet(tuple(self.members.values()))

    def run(self, strategy: Strategy) -> Completed | Failed:
        try:
            step = next(strategy)
            while True:
                self.steps.append(step)
                if isinstance(step, Start):
                    for serial in step.serials:
                        mid = f"i{next(self.ids)}"
                        self.members[mid] = Member(mid, serial, step.release, ready=False)
                elif isinstance(step, AwaitReady):
                    for mid in step.instance_ids:
                        m = self.members[mid]
                        if m.release != self.unhealthy_release:
                            self.members[mid] = Member(m.id, m.serial, m.release, ready=True)
                elif isinstance(step, Retire):
                    for mid in step.instance_ids:
                        del self.members[mid]
                self.history.append(self.fleet())
                step = strategy.send(self.fleet())
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def old_fleet(n: int, release: int = 1) -> list[Member]:
    return [Member(f"o{i}", i, release, ready=True) for i in range(n)]


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable"),
    [(3, 1, 0), (3, 0, 1), (5, 2, 1), (10, "25%", 0), (10, 0, "30%"), (1, 1, 0), (30, 5, 0)],
)
def test_rolling_replaces_every_instance_within_bounds(
    replicas: int, surge: int | str, unavailable: int | str
) -> None:
    sim = Simulator(old_fleet(replicas))
    outcome = sim.run(
        rolling(2, replicas, sim.fleet(), max_surge=surge, max_unavailable=unavailable)
    )
    assert isinstance(outcome, Completed)
    final = sim.fleet()
    assert sorted(m.serial for m in final.members) == list(range(replicas))
    assert all(m.release == 2 and m.ready for m in final.members)
    from corral.spec.model import resolve_count

    max_total = replicas + resolve_count(surge, replicas, round_up=True)
    min_ready = replicas - resolve_count(unavailable, replicas, round_up=False)
    for snapshot in sim.history:
        assert len(snapshot.members) <= max(max_total, replicas + 1)
        assert sum(m.ready for m in snapshot.members) >= min_ready


def test_max_unavailable_zero_never_drops_below_desired() -> None:
    sim = Simulator(old_fleet(4))
    sim.run(rolling(2, 4, sim.fleet(), max_surge=1, max_unavailable=0))
    assert min(sum(m.ready for m in f.members) for f in sim.history) == 4


def test_create_starts_all_at_once() -> None:
    sim = Simulator([])
    outcome = sim.run(rolling(1, 3, sim.fleet()))
    assert isinstance(outcome, Completed)
    assert isinstance(sim.steps[0], Start) and sim.steps[0].serials == (0, 1, 2)


def test_unhealthy_release_fails_without_stopping_old_ones() -> None:
    sim = Simulator(old_fleet(3), unhealthy_release=2)
    outcome = sim.run(rolling(2, 3, sim.fleet(), max_surge=1, max_unavailable=0))
    assert isinstance(outcome, Failed)
    assert "never became healthy" in outcome.reason
    assert sum(1 for m in sim.fleet().members if m.release == 1 and m.ready) == 3


def test_rollback_retires_failed_instances_and_restores_old_release() -> None:
    members = [*old_fleet(2), Member("n1", 2, 2, ready=False)]
    sim = Simulator(members)
    outcome = sim.run(rolling(1, 3, sim.fleet(), max_surge=3, max_unavailable=0))
    assert isinstance(outcome, Completed)
    assert sorted(m.serial for m in sim.fleet().members) == [0, 1, 2]
    assert all(m.release == 1 for m in sim.fleet().members)
    assert isinstance(sim.steps[0], Retire) and sim.steps[0].instance_ids == ("n1",)


def test_scale_down_retires_highest_serials() -> None:
    sim = Simulator(old_fleet(5, release=1))
    outcome = sim.run(rolling(1, 2, sim.fleet()))
    assert isinstance(outcome, Completed)
    assert sorted(m.serial for m in sim.fleet().members) == [0, 1]


def test_scale_up_adds_missing_serials() -> None:
    sim = Simulator(old_fleet(2, release=1))
    sim.run(rolling(1, 4, sim.fleet()))
    assert sorted(m.serial for m in sim.fleet().members) == [0, 1, 2, 3]


def test_dead_instance_is_retired_then_replaced_with_its_serial() -> None:
    members = old_fleet(3, release=1)
    members[1] = Member("o1", 1, 1, ready=False, alive=False)
    sim = Simulator(members)
    sim.run(rolling(1, 3, sim.fleet()))
    assert sim.steps[0] == Retire(("o1",), reason="exited")
    assert sorted(m.serial for m in sim.fleet().members) == [0, 1, 2]
    assert "o1" not in {m.id for m in sim.fleet().members}


def test_resume_after_crash_continues_from_mixed_fleet() -> None:
    members = [
        Member("o0", 0, 1, ready=True),
        Member("n0", 0, 2, ready=True),
        Member("o1", 1, 1, ready=True),
        Member("o2", 2, 1, ready=True),
    ]
    sim = Simulator(members)
    outcome = sim.run(rolling(2, 3, sim.fleet(), max_surge=1, max_unavailable=0))
    assert isinstance(outcome, Completed)
    assert {m.release for m in sim.fleet().members} == {2}
    assert "n0" in {m.id for m in sim.fleet().members}  # nothing started twice for serial 0
