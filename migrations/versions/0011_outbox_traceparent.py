"""The trace context of an outbox row: the W3C `traceparent` of the transaction that wrote it
(NULL when that process was not tracing), so the relay's send continues the trace of the event
that caused the row (service/tracing.py).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing, and rows already waiting are sent as before.
    op.add_column("outbox", sa.Column("traceparent", sa.Text))


def downgrade() -> None:
    op.drop_column("outbox", "traceparent")
