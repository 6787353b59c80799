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
            )
            for r in releases
        ],
    )
