"""A canary resumed by a new agent continues at the step it had reached (its apply records it),
with the weight in force there; it never replays the steps from 0."""

from __future__ import annotations

import time
from typing import Any

from corral.rollout.book import InstanceBook
from corral.rollout.canary import canary
from corral.rollout.executor import ServiceTarget
from corral.rollout.progress import recall, record, restore_weights
from corral.rollout.steps import Member, Reached, SetWeight
from corral.state.memory import InMemoryStateStore
from corral.state.records import ApplyRecord, ApplyStatus
from tests.unit.test_executor import Harness
from tests.unit.test_strategies import Sim, old

STEPS: list[dict[str, Any]] = [
    {"set_weight": 25},
    {"pause": {}},
    {"set_weight": 50},
    {"pause": {}},
    {"set_weight": 75},
]


def test_a_resumed_canary_starts_at_its_step_with_the_weight_in_force_there() -> None:
    canaries = [Member(f"n{i}", 4 + i, 2, ready=True) for i in range(2)]
    sim = Sim(old(4) + canaries)
    sim.run(canary(2, 4, sim.fleet(), steps=STEPS, start_at=3))
    weights = [s.percent for s in sim.steps if isinstance(s, SetWeight)]
    assert weights == [50, 75, 100]  # not 0, 25, 50, ... again
    assert [s.index for s in sim.steps if isinstance(s, Reached)] == [3, 4, 5]


def test_a_fresh_canary_reports_every_step_and_promotion() -> None:
    sim = Sim(old(4))
    sim.run(canary(2, 4, sim.fleet(), steps=[{"set_weight": 50}]))
    assert sim.steps[0] == SetWeight(2, 0)
    assert [(s.index, s.total) for s in sim.steps if isinstance(s, Reached)] == [(0, 1), (1, 1)]


def running_apply(store: InMemoryStateStore) -> str:
    store.create_apply(
        ApplyRecord("a-1", ApplyStatus.RUNNING, target={}, holder={}, created_at=time.time())
    )
    return "a-1"


def test_progress_is_kept_in_the_running_apply_and_restores_the_split() -> None:
    store = InMemoryStateStore("p/dev")
    apply_id = running_apply(store)
    record(store, apply_id, "web", release=2, step=3, steps=5)
    record(store, apply_id, "web", release=2, weight=50)
    assert recall(store, apply_id, "web") == {"release": 2, "step": 3, "steps": 5, "weight": 50}
    book = InstanceBook()
    restore_weights(store, book)
    assert book.weights == {"web": (2, 50)}
    store.update_apply(apply_id, status=ApplyStatus.SUCCEEDED, result={"web": {"ok": True}})
    record(store, apply_id, "web", step=4)  # a finished apply is never written again
    assert recall(store, apply_id, "web") == {}
    restore_weights(store, fresh := InstanceBook())
    assert fresh.weights == {}


async def test_the_executor_continues_a_recorded_canary_where_it_was() -> None:
    harness = Harness()
    await harness.router.open_route("web", "127.0.0.1", 8000)
    target = ServiceTarget(
        "web",
        2,
        {
            "strategy": {
                "type": "canary",
                "steps": [{"set_weight": 25}, {"set_weight": 50}, {"set_weight": 75}],
            },
            "stop_grace": 0.1,
            "drain_timeout": 0.1,
            "route": {"port": 8000},
        },
    )
    r1 = harness.release("sha256:a")
    assert (await harness.executor.converge(target, r1, None)).ok
    r2 = harness.release("sha256:b")
    apply_id = running_apply(harness.store)
    record(harness.store, apply_id, "web", release=2, step=2, steps=3, weight=50)
    harness.executor.apply_id = apply_id
    result = await harness.executor.converge(target, r2, r1)
    assert result.ok, result.reason
    weights = [m for kind, m in harness.events if kind == "rollout.weights"]
    assert [w.split(" gets ")[1] for w in weights] == [
        "50% of the traffic",
        "75% of the traffic",
        "100% of the traffic",
    ]
    assert recall(harness.store, apply_id, "web")["step"] == 3  # reached full promotion
