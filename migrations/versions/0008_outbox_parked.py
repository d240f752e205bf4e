"""Parked outbox rows: a row the broker will never accept (too large for its topic, say) is set
aside with its error instead of stalling every relay behind it.

`parked_at` and `park_error` are set by the relay; the relay's claim skips parked rows, and an
operator re-queues one (`POST /v1/outbox/parked/{id}/retry`) once the cause is fixed. The partial
index lists parked rows (the API and the metric) without reading the rest of the outbox.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("parked_at", sa.DateTime(timezone=True)))
    op.add_column("outbox", sa.Column("park_error", sa.Text))
    op.create_index(
        "outbox_parked", "outbox", ["id"], postgresql_where=sa.text("parked_at IS NOT NULL")
    )


def downgrade() -> None:
    op.drop_index("outbox_parked", table_name="outbox")
    op.drop_column("outbox", "park_error")
    op.drop_column("outbox", "parked_at")
