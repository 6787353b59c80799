"""The releases of a service, oldest first, and which one runs.

One function for the API (`GET /v1/services/{name}/releases`) and the CLI (`corral history
SERVICE --json`), so both print the one schema, `api_schema.HistoryView`.
"""

from __future__ import annotations

from corral.api_schema import HistoryView, ReleaseView
from corral.errors import UsageError
from corral.state.protocol import StateStore


def history_of(store: StateStore, service: str) -> HistoryView:
    """Raises UsageError (exit 2; the API answers 404) for a service with no record."""
    record = store.get_service(service)
    releases = store.list_releases(service)
    if record is None and not releases:
        raise UsageError(
            f"no service named {service!r} in this environment",
            hint="`corral status` lists the recorded services.",
        )
    current = record.current_release if record else None
    endings = _endings(store, service)
    return HistoryView(
        service=service,
        current=f"r{current}" if current else None,
        releases=[
            ReleaseView(
                release=r.name,
                number=r.number,
                image_digest=r.image_digest,
                config_hash=r.config_hash,
                created_at=r.created_at,
                created_by=r.created_by,
                current=r.number == current,
                ended=endings.get(r.number, (None, None))[0],
                ended_at=endings.get(r.number, (None, None))[1],
            )
            for r in releases
        ],
    )


_ENDINGS = ("rollout.succeeded", "rollout.rolled_back")


def _endings(store: StateStore, service: str) -> dict[int, tuple[str, float]]:
    """Release number → how its last roll-out ended, and when, from the event trail."""
    endings: dict[int, tuple[str, float]] = {}
    for event in store.list_events(service=service, limit=100_000):
        number = event.data.get("release") if event.kind in _ENDINGS else None
        if not isinstance(number, int):
            continue
        how = (
            "succeeded"
            if event.kind == "rollout.succeeded"
            else f"rolled back: {event.data.get('reason') or 'failed'}"
        )
        endings[number] = (how, event.ts)
    return endings
