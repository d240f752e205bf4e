"""The event log keeps its primary key and the dead-letter index only.

`event_log_district_received` (district, received time) was never read: the door looks events up
by id, the status API by id, re-drive by id and status. Every event paid for it twice, once in the
door's dedupe insert and once in the consumer's outcome update (that update changes `status`,
which the dead-letter index's predicate reads, so it is never a HOT update and writes a new entry
in every index). Without it, PostgreSQL's CPU per ingested page event fell from 12.7-16.7 us to
9.3-12.7 us (four and three interleaved runs of 30,000 events against one database).

An operator listing a district's recent events now scans the table; re-create the index (the
downgrade does) if that becomes a routine query.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.drop_index("event_log_district_received", table_name="event_log")


def downgrade() -> None:
    op.create_index("event_log_district_received", "event_log", ["district_id", "received_at"])
