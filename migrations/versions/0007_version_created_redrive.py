"""Newest-wins orders by the event's `created` after `last_modified`; re-drive and dead letters
are tracked in the event log.

- Every record table gets `version_created`: the `created` time of the event that wrote the row.
  Versions are ordered by (`version_at`, `version_created`, `version_delete`, `version_event`), so
  a record Clever shares again after its delete (a `*.created` carrying the `last_modified` it had
  when it was deleted, but a later `created`) wins over the delete. The column is nullable and
  not back-filled: adding it rewrites nothing and holds the tables' locks for an instant, and
  consumers still running the previous code (which does not write it) go on working. A row
  written before it reads its event's `received_at` from the event log instead (never earlier
  than the event's `created`, so no older event can win over it), else the far future (the
  stored row wins every tie, as before); see `service/roster/store.STORED_VERSION`.
- `event_log.redrive_requested_at`: set, with the status back to `accepted`, by a re-drive
  before it re-publishes (so a running consumer never skips the copy as settled), and cleared
  once Kafka acknowledged the copy; a re-drive that failed in between finds these events again.
- `event_log.dead_letter_pending`: a dead-lettered event whose dead-letter record has not yet
  been acknowledged by Kafka (sent after the consumer's commit, so a retried batch never sends
  it twice); a batch read again after a crash sends it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

_RECORD_TABLES = ("districts", "schools", "users", "sections", "courses", "terms", "resources")


def upgrade() -> None:
    for table in _RECORD_TABLES:
        op.add_column(table, sa.Column("version_created", sa.DateTime(timezone=True)))
    op.add_column("event_log", sa.Column("redrive_requested_at", sa.DateTime(timezone=True)))
    op.add_column(
        "event_log",
        sa.Column("dead_letter_pending", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("event_log", "dead_letter_pending")
    op.drop_column("event_log", "redrive_requested_at")
    for table in _RECORD_TABLES:
        op.drop_column(table, "version_created")
