"""Choose and open the state store an environment uses.

The URL comes from the spec's `state:` (passed in), else `$CORRAL_STATE_URL`, else SQLite at
`<home>/state.db`.
"""

from __future__ import annotations

import os
from pathlib import Path

from corral.errors import UsageError
from corral.state.protocol import StateStore
from corral.state.sql import SqlStateStore

STATE_URL_VAR = "CORRAL_STATE_URL"


def state_url(url: str | None, home: Path) -> str:
    """The state URL in force: explicit, else `$CORRAL_STATE_URL`, else the home's SQLite."""
    return url or os.environ.get(STATE_URL_VAR) or f"sqlite:///{home / 'state.db'}"


def open_state(url: str | None, env: str, home: Path) -> StateStore:
    chosen = state_url(url, home)
    scheme = chosen.partition(":")[0].partition("+")[0].lower()
    if scheme == "sqlite":
        return SqlStateStore(chosen, env)
    if scheme in ("postgresql", "postgres"):
        # SqlStateStore is written for PostgreSQL too; it waits for psycopg and a test server.
        raise UsageError(
            "PostgreSQL state arrives with a later release",
            hint=f"Use SQLite for now: sqlite:///path/to/state.db, or unset {STATE_URL_VAR}.",
        )
    raise UsageError(
        f"unsupported state URL {chosen!r}",
        hint="Use sqlite:///path/to/state.db (PostgreSQL arrives with a later release).",
    )
