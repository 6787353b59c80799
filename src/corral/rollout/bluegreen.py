"""The blue-green strategy: the new set starts in full beside the old one, is previewed on
its own route, then takes all traffic at once; the old set stays up for an instant rollback."""

from __future__ import annotations

from typing import Any

from corral.rollout.phases import ensure_ready, retire_others
from corral.rollout.steps import (
    Analyse,
    Completed,
    Failed,
    Fleet,
    Pause,
    Preview,
    SetWeight,
    Strategy,
)


def blue_green(
    target: int,
    replicas: int,
    fleet: Fleet,
    *,
    preview_port: int | None = None,
    auto_promote_after: float | None = None,
    scale_down_delay: float = 30.0,
    bake_window: float = 0.0,
    analysis: dict[str, Any] | None = None,
) -> Strategy:
    if not fleet.not_of(target):
        got = yield from ensure_ready(target, replicas, fleet)
        return got if isinstance(got, Failed) else Completed()
    fleet = yield SetWeight(target, 0)  # the new set gets no main traffic before promotion
    got = yield from ensure_ready(target, replicas, fleet)
    if isinstance(got, Failed):
        return got
    fleet = got
    if preview_port:
        fleet = yield Preview(target, preview_port)
    fleet = yield Pause(
        auto_promote_after,
        "awaiting promotion"
        if auto_promote_after is None
        else f"promoting in {auto_promote_after:g}s",
        awaiting_promotion=auto_promote_after is None,
    )
    fleet = yield SetWeight(target, 100)  # the switch: all traffic at once
    if bake_window > 0:
        fleet = yield Analyse(
            target, {**(analysis or {}), "window": bake_window}, phase="bake window"
        )
        if fleet.verdict is not None and fleet.verdict.result == "fail":
            return Failed(f"bake window analysis failed: {fleet.verdict.detail}")
    if scale_down_delay > 0:
        fleet = yield Pause(scale_down_delay, "old set kept for an instant rollback")
    fleet = yield from retire_others(target, fleet)
    return Completed()
