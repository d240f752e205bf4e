"""SQLAlchemy Core table definitions, mirroring what the Alembic revisions create.

The revisions in `migrations/versions` are the source of truth for the schema; a test checks that
these definitions and the migrated database agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
)

metadata = MetaData()

EVENT_STATUSES = ("accepted", "applied", "stale", "dead_lettered")

# One row per Clever event id ever seen by any door: the dedupe record of the webhook door and the
# status the query API reports. Partition and offset are where the consumer read it from.
event_log = Table(
    "event_log",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("type", Text, nullable=False),
    Column("district_id", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="accepted"),
    Column("error", Text),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("applied_at", DateTime(timezone=True)),
    Column("kafka_partition", Integer),
    Column("kafka_offset", BigInteger),
    CheckConstraint(
        "status IN ('accepted', 'applied', 'stale', 'dead_lettered')", name="event_log_status"
    ),
    Index("event_log_district_received", "district_id", "received_at"),
)
