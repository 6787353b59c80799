"""The trunk's schema (what `metadata.create_all` made before Alembic), stamped version 1.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table("schema_version", sa.Column("version", sa.Integer, primary_key=True))
    op.bulk_insert(sa.table("schema_version", sa.column("version", sa.Integer)), [{"version": 1}])
    op.create_table(
        "releases",
        sa.Column("env", sa.Text, primary_key=True),
        sa.Column("service", sa.Text, primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("image_digest", sa.Text, nullable=False),
        sa.Column("config_hash", sa.Text, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.UniqueConstraint("env", "service", "image_digest", "config_hash", name="releases_key"),
    )
    op.create_table(
        "services",
        sa.Column("env", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("current_release", sa.Integer),
        sa.Column("replicas", sa.Integer, nullable=False),
        sa.Column("route_port", sa.Integer),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.ForeignKeyConstraint(
            ["env", "name", "current_release"],
            ["releases.env", "releases.service", "releases.number"],
        ),
    )
    op.create_table(
        "instances",
        sa.Column("env", sa.Text, primary_key=True),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("serial", sa.Integer, nullable=False),
        sa.Column("release", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("address", sa.Text),
        sa.Column("driver_ref", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("reason", sa.Text),
        sa.ForeignKeyConstraint(
            ["env", "service", "release"],
            ["releases.env", "releases.service", "releases.number"],
        ),
    )
    op.create_index("instances_by_service", "instances", ["env", "service"])
    op.create_table(
        "counters",
        sa.Column("env", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("env", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("service", sa.Text),
        sa.Column("actor", sa.Text),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("events_by_service", "events", ["env", "service", "seq"])
    op.create_table(
        "journal",
        sa.Column("env", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("apply_id", sa.Text),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
    )
    op.create_index("journal_by_status", "journal", ["env", "status"])
    op.create_table(
        "applies",
        sa.Column("env", sa.Text, primary_key=True),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("finished_at", sa.Double),
        sa.Column("result", sa.Text, nullable=False),
    )
    op.create_table(
        "locks",
        sa.Column("env", sa.Text, primary_key=True),
        sa.Column("holder_id", sa.Text, nullable=False),
        sa.Column("user", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("operation", sa.Text, nullable=False),
        sa.Column("since", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
    )
    op.create_table(
        "agents",
        sa.Column("env", sa.Text, primary_key=True),
        sa.Column("agent_id", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("home", sa.Text, nullable=False),
        sa.Column("socket", sa.Text, nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("heartbeat_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "agents", "locks", "applies", "journal", "events", "counters", "instances", "services",
        "releases", "schema_version",
    ):  # fmt: skip
        op.drop_table(table)
