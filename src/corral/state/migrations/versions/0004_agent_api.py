"""`agents.api`: where the agent's HTTP API can be reached from elsewhere ('' when nowhere).

A CLI on another machine or CORRAL_HOME reads the owner's logs through it (`corral logs`)
instead of its own, empty, log directory. Existing rows get '' (no reachable API).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:  # SQLite cannot alter a table in place
        batch.add_column(sa.Column("api", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("api")
