"""The canary strategy: a few new instances take a growing share of traffic, step by step,
gated by analysis of the router's figures; full promotion, then a bake window.

Before each spec step it yields `Reached(index)`, which the executor records; a roll-out resumed
after an agent restart starts at the recorded step (`start_at`) with the weight in force there,
instead of replaying the steps from 0."""

from __future__ import annotations

import math
from typing import Any

from corral.rollout.phases import ensure_ready, retire_others
from corral.rollout.steps import (
    Analyse,
    Completed,
    Failed,
    Fleet,
    Pause,
    Reached,
    SetWeight,
    Strategy,
)


def canary_count(replicas: int, weight: int) -> int:
    """Canaries that carry `weight` percent: at least one while the weight is above 0."""
    if weight >= 100:
        return replicas
    return max(1, math.ceil(replicas * weight / 100)) if weight > 0 else 0


def weight_before(steps: list[dict[str, Any]], index: int) -> int:
    """The canary's weight in force when step `index` begins (0 before any set_weight)."""
    weights = [int(s["set_weight"]) for s in steps[:index] if s.get("set_weight") is not None]
    return weights[-1] if weights else 0


def canary(
    target: int,
    replicas: int,
    fleet: Fleet,
    *,
    steps: list[dict[str, Any]],
    bake_window: float = 0.0,
    analysis: dict[str, Any] | None = None,
    start_at: int = 0,
) -> Strategy:
    if not fleet.not_of(target):  # nothing to compare with: a first release just starts
        got = yield from ensure_ready(target, replicas, fleet)
        return got if isinstance(got, Failed) else Completed()
    start_at = min(max(0, start_at), len(steps))
    resumed = weight_before(steps, start_at)  # 0 on a fresh start
    if resumed > 0:
        got = yield from ensure_ready(
            target, max(canary_count(replicas, resumed), len(fleet.of(target))), fleet
        )
        if isinstance(got, Failed):
            return got
        fleet = got
    fleet = yield SetWeight(target, resumed)  # ready canaries get no traffic before their step
    for index in range(start_at, len(steps)):
        step = steps[index]
        fleet = yield Reached(target, index, len(steps))
        if step.get("set_weight") is not None:
            weight = int(step["set_weight"])
            want = canary_count(replicas, weight)
            got = yield from ensure_ready(target, max(want, len(fleet.of(target))), fleet)
            if isinstance(got, Failed):
                return got
            fleet = yield SetWeight(target, weight)
        elif step.get("pause") is not None:
            duration = step["pause"].get("duration")
            fleet = yield Pause(
                duration,
                f"paused for {duration:g}s" if duration is not None else "awaiting promotion",
                awaiting_promotion=duration is None,
            )
        elif step.get("analysis") is not None:
            fleet = yield Analyse(target, step["analysis"])
            verdict = fleet.verdict
            if verdict is not None and verdict.result == "fail":
                return Failed(f"analysis failed: {verdict.detail}")
            pause = step["analysis"].get("inconclusive", "pause") == "pause"
            if verdict is not None and verdict.result == "inconclusive" and pause:
                fleet = yield Pause(
                    None, f"analysis inconclusive ({verdict.detail})", awaiting_promotion=True
                )
    fleet = yield Reached(target, len(steps), len(steps))
    got = yield from ensure_ready(target, replicas, fleet)
    if isinstance(got, Failed):
        return got
    fleet = yield SetWeight(target, 100)
    fleet = yield from retire_others(target, got)
    if bake_window > 0:
        fleet = yield Analyse(
            target, {**(analysis or {}), "window": bake_window}, phase="bake window"
        )
        if fleet.verdict is not None and fleet.verdict.result == "fail":
            return Failed(f"bake window analysis failed: {fleet.verdict.detail}")
    return Completed()
