"""Backfills: one row per full sync of a district from Clever's Data API.

A row is the request (inserted by `POST /v1/districts/{id}/backfill`, `roster backfill`, or a
poller on first contact or a refused cursor) and the run's progress: its runner and heartbeat,
the newest event id read before any list (`start_event_id`, kept across a resume so the
district's cursor never skips the events written during the run), counts per kind, and what
the archive step found missing and archived.

`backfills_one_running` allows one running backfill per district: a second request while one
runs fails on it, which the API answers 409. An interrupted run stays `running` with a stale
heartbeat; the next holder of the district's lease resumes it under the same id.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "backfills",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("district_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="running"),
        sa.Column("archive_missing", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("force", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("start_event_id", sa.Text),
        sa.Column(
            "requested_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("runner", sa.Text),
        sa.Column("counts", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("missing", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("archived", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("error", sa.Text),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'guarded')", name="backfills_status"
        ),
        sa.CheckConstraint(
            "reason IN ('api', 'cli', 'first_contact', 'cursor_refused')", name="backfills_reason"
        ),
    )
    op.create_index(
        "backfills_one_running",
        "backfills",
        ["district_id"],
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index("backfills_district", "backfills", ["district_id", "requested_at"])


def downgrade() -> None:
    op.drop_index("backfills_district", table_name="backfills")
    op.drop_index("backfills_one_running", table_name="backfills")
    op.drop_table("backfills")
