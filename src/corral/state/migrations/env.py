"""Alembic's environment: runs the revisions on the connection corral hands it.

corral calls Alembic in code (`corral.state.migrations.upgrade`), inside the write transaction
that serialises schema changes, so this file never opens a connection of its own.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from corral.state.sql import metadata

connection: Connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters tables by copying them ("batch" mode); PostgreSQL alters them in place.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
