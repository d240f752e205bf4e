"""The event log: every Clever event id seen, its status and where it was read from.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "event_log",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("district_id", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="accepted"),
        sa.Column("error", sa.Text),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True)),
        sa.Column("kafka_partition", sa.Integer),
        sa.Column("kafka_offset", sa.BigInteger),
        sa.CheckConstraint(
            "status IN ('accepted', 'applied', 'stale', 'dead_lettered')", name="event_log_status"
        ),
    )
    op.create_index("event_log_district_received", "event_log", ["district_id", "received_at"])


def downgrade() -> None:
    op.drop_index("event_log_district_received", table_name="event_log")
    op.drop_table("event_log")
