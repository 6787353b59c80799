"""Choose and open the state store an environment uses.

The URL comes from the spec's `state:` (passed in), else `$CORRAL_STATE_URL`, else SQLite at
`<home>/state.db`. SQLite keeps one machine's state; PostgreSQL (`postgresql://…`) is shared
by a team, with its lock lease and agent record seen from every machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from corral.errors import UsageError
from corral.state.protocol import StateStore

STATE_URL_VAR = "CORRAL_STATE_URL"  # the same name corral.state.sql exports

__all__ = ["STATE_URL_VAR", "open_state", "state_url"]

_SCHEMES = ("sqlite", "postgresql", "postgres")


def state_url(url: str | None, home: Path) -> str:
    """The state URL in force: explicit, else `$CORRAL_STATE_URL`, else the home's SQLite."""
    return url or os.environ.get(STATE_URL_VAR) or f"sqlite:///{home / 'state.db'}"


def open_state(url: str | None, env: str, home: Path) -> StateStore:
    chosen = state_url(url, home)
    scheme = chosen.partition(":")[0].partition("+")[0].lower()
    if scheme not in _SCHEMES:
        shown = chosen.partition("://")[0] + "://…" if "://" in chosen else repr(chosen)
        raise UsageError(
            f"unsupported state URL {shown}",
            hint="Use sqlite:///path/to/state.db or postgresql://user:password@host:port/db.",
        )
    # imported here: SQLAlchemy and Alembic cost every CLI call a third of its start-up, and
    # commands answered by the agent never open a store
    from corral.state.sql import SqlStateStore

    return SqlStateStore(chosen, env)
