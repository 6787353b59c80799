"""Stamp `schema_version` 2: from here on Alembic manages the schema.

Corral before Alembic created its tables with `metadata.create_all` and refused a database
whose `schema_version` is above 1. Raising it keeps such an older corral from writing to a
database whose schema it no longer knows; it says "Upgrade corral" instead.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_version = sa.table("schema_version", sa.column("version", sa.Integer))


def upgrade() -> None:
    op.execute(_version.delete())
    op.bulk_insert(_version, [{"version": 2}])


def downgrade() -> None:
    op.execute(_version.delete())
    op.bulk_insert(_version, [{"version": 1}])
