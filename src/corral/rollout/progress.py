"""How far a running roll-out got, kept in its apply record so the next agent continues there.

While an apply runs, its record's `result` holds `{"progress": {service: {...}}}`: the release
rolled to, the strategy step reached (`step`, of `steps`) and the traffic split in force
(`weight` for that release). The apply's final result replaces it. A resumed apply reads it
back (`recall`), and recovery restores the split before the first route is set
(`restore_weights`), so a canary at 50 % stays at 50 % across an agent restart.
"""

from __future__ import annotations

from typing import Any

from corral.rollout.book import InstanceBook
from corral.state.protocol import StateStore
from corral.state.records import ApplyStatus


def record(store: StateStore, apply_id: str | None, service: str, **fields: Any) -> None:
    """Merge `fields` into the service's progress in the running apply `apply_id`."""
    if apply_id is None:
        return
    apply = store.get_apply(apply_id)
    if apply is None or apply.status is not ApplyStatus.RUNNING:
        return
    progress = dict(apply.result.get("progress") or {})
    progress[service] = {**progress.get(service, {}), **fields}
    store.update_apply(
        apply_id, status=ApplyStatus.RUNNING, result={**apply.result, "progress": progress}
    )


def recall(store: StateStore, apply_id: str | None, service: str) -> dict[str, Any]:
    """The service's recorded progress in apply `apply_id` ({} when none)."""
    apply = store.get_apply(apply_id) if apply_id is not None else None
    if apply is None:
        return {}
    found: dict[str, Any] = (apply.result.get("progress") or {}).get(service) or {}
    return found


def restore_weights(store: StateStore, book: InstanceBook) -> None:
    """Put back the traffic split of every roll-out an apply left running."""
    for apply in store.list_applies(status=ApplyStatus.RUNNING):
        for service, progress in (apply.result.get("progress") or {}).items():
            if progress.get("weight") is not None and progress.get("release") is not None:
                book.weights[service] = (int(progress["release"]), int(progress["weight"]))
