"""Canary and blue-green step by step, with plain data (no process, socket or sleep)."""

from __future__ import annotations

import itertools

from corral.rollout.analysis import Sample, judge
from corral.rollout.bluegreen import blue_green
from corral.rollout.canary import canary
from corral.rollout.executor import weigh
from corral.rollout.steps import (
    Analyse,
    AwaitReady,
    Completed,
    Failed,
    Fleet,
    Member,
    Pause,
    Preview,
    Retire,
    SetWeight,
    Start,
    Strategy,
    Verdict,
)
from corral.router.protocol import Backend


class Sim:
    def __init__(self, members: list[Member], verdicts: list[str] | None = None) -> None:
        self.members = {m.id: m for m in members}
        self.ids = itertools.count(100)
        self.verdicts = list(verdicts or [])
        self.steps: list[object] = []
        self.weight: tuple[int, int] | None = None
        self.routed_while: list[tuple[object, tuple[int, int] | None]] = []

    def fleet(self, verdict: Verdict | None = None) -> Fleet:
        return Fleet(tuple(self.members.values()), verdict)

    def run(self, strategy: Strategy) -> Completed | Failed:
        try:
            step = next(strategy)
            while True:
                self.steps.append(step)
                verdict = None
                if isinstance(step, Start):
                    for serial in step.serials:
                        mid = f"n{next(self.ids)}"
                        self.members[mid] = Member(mid, serial, step.release, ready=False)
                elif isinstance(step, AwaitReady):
                    for mid in step.instance_ids:
                        m = self.members[mid]
                        self.members[mid] = Member(m.id, m.serial, m.release, ready=True)
                elif isinstance(step, Retire):
                    for mid in step.instance_ids:
                        del self.members[mid]
                elif isinstance(step, SetWeight):
                    self.weight = (step.release, step.percent)
                elif isinstance(step, Analyse):
                    result = self.verdicts.pop(0) if self.verdicts else "pass"
                    verdict = Verdict(result, f"{result} for test")
                step = strategy.send(self.fleet(verdict))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def old(n: int) -> list[Member]:
    return [Member(f"o{i}", i, 1, ready=True) for i in range(n)]


STEPS = [
    {"set_weight": 10},
    {"analysis": {"window": 1}},
    {"set_weight": 50},
    {"pause": {"duration": 1}},
]


def test_canary_splits_traffic_then_promotes_and_retires_the_old_release() -> None:
    sim = Sim(old(10))
    outcome = sim.run(canary(2, 10, sim.fleet(), steps=STEPS, bake_window=5))
    assert isinstance(outcome, Completed)
    assert sim.steps[0] == SetWeight(2, 0)  # canaries get no traffic before their step
    weights = [s.percent for s in sim.steps if isinstance(s, SetWeight)]
    assert weights == [0, 10, 50, 100]
    # 10 % of 10 replicas → 1 canary before the first weight; 50 % → 5
    starts = [len(s.serials) for s in sim.steps if isinstance(s, Start)]
    assert starts[0] == 1 and sum(starts) == 10
    assert {m.release for m in sim.members.values()} == {2}
    last = sim.steps[-1]
    assert isinstance(last, Analyse) and last.phase == "bake window"


def test_canary_fails_on_analysis_and_never_retires_old_ones() -> None:
    sim = Sim(old(4), verdicts=["fail"])
    outcome = sim.run(canary(2, 4, sim.fleet(), steps=STEPS))
    assert isinstance(outcome, Failed) and "analysis failed" in outcome.reason
    assert sum(1 for m in sim.members.values() if m.release == 1) == 4
    assert not any(isinstance(s, Retire) for s in sim.steps)


def test_inconclusive_analysis_pauses_for_a_person_by_default() -> None:
    sim = Sim(old(2), verdicts=["inconclusive"])
    sim.run(canary(2, 2, sim.fleet(), steps=STEPS[:2]))
    pauses = [s for s in sim.steps if isinstance(s, Pause)]
    assert pauses and pauses[0].awaiting_promotion


def test_inconclusive_can_proceed_when_the_spec_says_so() -> None:
    steps = [{"set_weight": 10}, {"analysis": {"window": 1, "inconclusive": "proceed"}}]
    sim = Sim(old(2), verdicts=["inconclusive"])
    assert isinstance(sim.run(canary(2, 2, sim.fleet(), steps=steps)), Completed)
    assert not any(isinstance(s, Pause) for s in sim.steps)


def test_bake_window_failure_after_promotion_is_a_failure() -> None:
    sim = Sim(old(2), verdicts=["pass", "fail"])
    outcome = sim.run(canary(2, 2, sim.fleet(), steps=STEPS, bake_window=5))
    assert isinstance(outcome, Failed) and "bake window" in outcome.reason


def test_blue_green_previews_waits_switches_at_once_then_scales_down() -> None:
    sim = Sim(old(3))
    outcome = sim.run(blue_green(2, 3, sim.fleet(), preview_port=9000, scale_down_delay=2))
    assert isinstance(outcome, Completed)
    kinds = [type(s).__name__ for s in sim.steps]
    assert kinds[0] == "SetWeight" and "Preview" in kinds
    promote = next(s for s in sim.steps if isinstance(s, Pause))
    assert promote.awaiting_promotion  # no auto_promote_after: a person promotes
    switch = [s for s in sim.steps if isinstance(s, SetWeight)]
    assert [s.percent for s in switch] == [0, 100]
    # the whole new set is ready before the switch, the old set retired only after the delay
    index = sim.steps.index(switch[-1])
    assert any(isinstance(s, Start) and len(s.serials) == 3 for s in sim.steps[:index])
    retire = next(i for i, s in enumerate(sim.steps) if isinstance(s, Retire))
    assert retire > index and isinstance(sim.steps[retire - 1], Pause)
    assert isinstance(sim.steps[kinds.index("Preview")], Preview)


def test_first_release_just_starts_whatever_the_strategy() -> None:
    for strategy in (
        canary(1, 3, Fleet(()), steps=STEPS),
        blue_green(1, 3, Fleet(())),
    ):
        sim = Sim([])
        assert isinstance(sim.run(strategy), Completed)
        assert not any(isinstance(s, (Pause, SetWeight)) for s in sim.steps)


def test_weights_give_the_release_its_exact_share() -> None:
    backends = [Backend(f"n{i}", "r2", "127.0.0.1", 1) for i in range(1)] + [
        Backend(f"o{i}", "r1", "127.0.0.1", 1) for i in range(4)
    ]
    weighted = weigh(backends, (2, 10))
    new = sum(b.weight for b in weighted if b.release == "r2")
    total = sum(b.weight for b in weighted)
    assert new / total == 0.10
    assert {b.release for b in weigh(backends, (2, 0))} == {"r1"}
    assert {b.release for b in weigh(backends, (2, 100))} == {"r2"}
    only_old = [b for b in backends if b.release == "r1"]
    assert weigh(only_old, (2, 100)) == only_old  # never route to nothing


def test_analysis_verdicts() -> None:
    buckets = (0, 0, 0, 90, 9, 1, 0, 0, 0, 0, 0, 0, 0)
    good = Sample(100, 0, buckets)
    bad = Sample(100, 20, buckets)
    rules = {"max_error_rate": 0.05, "min_requests": 20, "max_p99_ms": 50}
    assert judge(good, None, rules).result == "pass"
    assert judge(bad, None, rules).result == "fail"
    assert judge(Sample(5, 0, buckets), None, rules).result == "inconclusive"
    slow = Sample(100, 0, (0,) * 8 + (100,) + (0,) * 4)
    assert judge(slow, None, rules).result == "fail"
    assert good.percentile_ms(0.99) == 20
