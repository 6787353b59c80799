"""Schema migrations with Alembic, shipped in the package and run in code when a store opens.

One revision chain serves SQLite and PostgreSQL. `versions/0001` is the schema corral made
with `metadata.create_all` before Alembic (stamped `schema_version` 1); a database from that
time has no `alembic_version` table and is stamped 0001 before it is upgraded. No alembic.ini
is needed: the configuration is built here and the caller's connection is handed to env.py,
so a migration runs inside the caller's (serialised) transaction.

For a new revision, add `versions/NNNN_what.py` by hand (copy the last one), set `HEAD`, and
run `pytest tests/conformance/test_migrations.py`: it checks the chain ends at `HEAD` and that
the migrated schema equals `corral.state.sql.metadata` on both databases.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, select, text

HEAD = "0004"  # the newest revision; kept here so that opening an up-to-date store is cheap
LEGACY = "0001"  # what a database made before Alembic holds

_HERE = Path(__file__).resolve().parent


def _config(conn: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    if conn is not None:
        config.attributes["connection"] = conn
    return config


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def known_revisions() -> set[str]:
    return {s.revision for s in script().walk_revisions()}


def current_revision(conn: Connection) -> str | None:
    """The revision a database is at: Alembic's stamp, else LEGACY for a pre-Alembic schema
    (`schema_version` 1), else None for an empty database. A pre-Alembic stamp above 1 comes
    back as "schema_version N" (a corral newer than this one made it)."""
    tables = inspect(conn)
    if tables.has_table("alembic_version"):
        stamp = conn.scalar(text("SELECT version_num FROM alembic_version"))
        return str(stamp) if stamp is not None else None
    if tables.has_table("schema_version"):
        version = conn.scalar(select(text("max(version)")).select_from(text("schema_version")))
        return LEGACY if version in (None, 1) else f"schema_version {version}"
    return None


def upgrade(conn: Connection, target: str = "head") -> None:
    """Bring the schema on `conn` to `target`, inside the caller's transaction.

    The caller checks first that `current_revision` is one of `known_revisions()`."""
    config = _config(conn)
    tables = inspect(conn)
    if not tables.has_table("alembic_version") and tables.has_table("schema_version"):
        command.stamp(config, LEGACY)
    command.upgrade(config, target)
