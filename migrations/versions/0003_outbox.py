"""The transactional outbox: downstream messages written in the same transaction as the change.

`outbox` holds each message until a relay has published it (`sent_at`), then for a retention
period. `shard` (a hash of the message key) is the unit a relay claims with
`FOR UPDATE SKIP LOCKED` on `outbox_shards`: one relay at a time per shard keeps each key's
messages in commit order across several relays. `outbox_sequences` numbers messages per key.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

SHARDS = 16


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("message_key", sa.Text, nullable=False),
        sa.Column("shard", sa.SmallInteger, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("district_id", sa.Text, nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column(
            "written_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
    )
    op.create_index("outbox_pending", "outbox", ["id"], postgresql_where=sa.text("sent_at IS NULL"))
    op.create_index(
        "outbox_sent", "outbox", ["sent_at"], postgresql_where=sa.text("sent_at IS NOT NULL")
    )
    op.create_table("outbox_shards", sa.Column("shard", sa.SmallInteger, primary_key=True))
    op.execute(f"INSERT INTO outbox_shards SELECT generate_series(0, {SHARDS - 1})")
    op.create_table(
        "outbox_sequences",
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("message_key", sa.Text, primary_key=True),
        sa.Column("sequence", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("outbox_sequences")
    op.drop_table("outbox_shards")
    op.drop_table("outbox")
