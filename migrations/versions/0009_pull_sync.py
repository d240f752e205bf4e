"""The pull doors' sync state: one row per district the service knows, and the pollers alive.

`sync_districts` holds, per district: where its token came from, its sync state, the Events API
cursor (the last event id whose page Kafka acknowledged, with that event's `created`, for the
30-day check), when it was last polled, drained and saw an event, the last error, and its lease
(`lease_owner` until `lease_expires_at`): one poller at a time polls a district, and every write
of the cursor or the state is fenced on the lease (`WHERE lease_owner = <me>`).
`pollers` holds each poller's heartbeat: a live poller claims at most its fair share,
ceil(districts with a token / live pollers).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sync_districts",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("token_source", sa.Text),
        sa.Column("sync_state", sa.Text, nullable=False, server_default="no_token"),
        sa.Column("cursor_event_id", sa.Text),
        sa.Column("cursor_created_at", sa.DateTime(timezone=True)),
        sa.Column("last_polled_at", sa.DateTime(timezone=True)),
        sa.Column("last_drained_at", sa.DateTime(timezone=True)),
        sa.Column("last_event_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.Column("lease_owner", sa.Text),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "sync_state IN ('backfilling', 'polling', 'token_invalid', 'no_token')",
            name="sync_districts_state",
        ),
    )
    op.create_table(
        "pollers",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("pollers")
    op.drop_table("sync_districts")
