"""SQLAlchemy Core table definitions, mirroring what the Alembic revisions create.

The revisions in `migrations/versions` are the source of truth for the schema; a test checks that
these definitions and the migrated database agree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB

metadata = MetaData()

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
    # Set by a re-drive as it puts the event back to `accepted`, until Kafka acknowledged the
    # re-published copy (migration 0007).
    Column("redrive_requested_at", DateTime(timezone=True)),
    # Dead-lettered, its dead-letter record not yet acknowledged by Kafka (migration 0007).
    Column("dead_letter_pending", Boolean, nullable=False, server_default=text("false")),
    CheckConstraint(
        "status IN ('accepted', 'applied', 'stale', 'dead_lettered')", name="event_log_status"
    ),
    # No index by district or time (migration 0006): nothing reads one, and each cost every
    # event an entry at the door's insert and again at the consumer's outcome update.
)

# Dead letters only (migration 0005): what an operator looks for; applied events cost no entry.
Index(
    "event_log_dead_lettered",
    event_log.c.received_at,
    postgresql_where=text("status = 'dead_lettered'"),
)


def _record_table(kind: str, *extra: Column[object]) -> Table:
    """A Clever record kind: its id, district, typed columns, the full object, and its version."""
    return Table(
        kind,
        metadata,
        Column("id", Text, primary_key=True),
        Column("district_id", Text, nullable=False),
        *extra,
        Column("data", JSONB, nullable=False),
        Column("deleted", Boolean, nullable=False),
        Column("version_at", DateTime(timezone=True), nullable=False),
        # Null in rows written before migration 0007 (see roster/store.STORED_VERSION).
        Column("version_created", DateTime(timezone=True)),
        Column("version_delete", Boolean, nullable=False),
        Column("version_event", Text, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
        Index(f"{kind}_district", "district_id"),
    )


districts = _record_table("districts")
schools = _record_table("schools", Column("name", Text))
users = _record_table(
    "users",
    Column("sis_id", Text),
    Column("name_first", Text),
    Column("name_middle", Text),
    Column("name_last", Text),
    Column("grade", Text),
    Column("primary_school_id", Text),
    Column("roles", ARRAY(Text), nullable=False, server_default="{}"),
)
sections = _record_table(
    "sections", Column("school_id", Text, nullable=False), Column("name", Text)
)
Index("sections_school", sections.c.school_id)
courses = _record_table("courses")
terms = _record_table("terms")
resources = _record_table("resources")

RECORD_TABLES: dict[str, Table] = {
    t.name: t for t in (districts, schools, users, sections, courses, terms, resources)
}

section_members = Table(
    "section_members",
    metadata,
    Column("section_id", Text, primary_key=True),
    Column("role", Text, primary_key=True),
    Column("user_id", Text, primary_key=True),
    CheckConstraint("role IN ('student', 'teacher')", name="section_members_role"),
    Index("section_members_user", "user_id", "role"),
)

user_schools = Table(
    "user_schools",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("role", Text, primary_key=True),
    Column("school_id", Text, primary_key=True),
    Index("user_schools_school", "school_id", "role"),
)

# The transactional outbox (migration 0003): downstream messages until a relay publishes them.
OUTBOX_SHARDS = 16
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("topic", Text, nullable=False),
    Column("message_key", Text, nullable=False),
    Column("shard", SmallInteger, nullable=False),
    Column("type", Text, nullable=False),
    Column("district_id", Text, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("data", JSON, nullable=False),  # written once, read once as text (migration 0005)
    Column("written_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("sent_at", DateTime(timezone=True)),
    # A row the broker refused for good, set aside with its error (migration 0008).
    Column("parked_at", DateTime(timezone=True)),
    Column("park_error", Text),
    # The trace context of the transaction that wrote the row (migration 0011, service/tracing.py).
    Column("traceparent", Text),
    Index("outbox_pending", "id", postgresql_where=text("sent_at IS NULL")),
    Index("outbox_sent", "sent_at", postgresql_where=text("sent_at IS NOT NULL")),
    Index("outbox_parked", "id", postgresql_where=text("parked_at IS NOT NULL")),
)
outbox_shards = Table("outbox_shards", metadata, Column("shard", SmallInteger, primary_key=True))
outbox_sequences = Table(
    "outbox_sequences",
    metadata,
    Column("topic", Text, primary_key=True),
    Column("message_key", Text, primary_key=True),
    Column("sequence", BigInteger, nullable=False),
)

# Programs and the single-school rule's alerts (migration 0004).
programs = Table(
    "programs",
    metadata,
    Column("code", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("single_school", Boolean, nullable=False),
)
program_assignments = Table(
    "program_assignments",
    metadata,
    Column("id", Text, primary_key=True),
    Column("program", Text, ForeignKey("programs.code"), nullable=False),
    Column("scope", Text, nullable=False),
    Column("scope_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint(
        "scope IN ('district', 'school', 'section', 'student')", name="program_assignments_scope"
    ),
    UniqueConstraint("program", "scope", "scope_id", name="program_assignments_unique"),
    Index("program_assignments_scope_id", "scope_id"),
)
alerts = Table(
    "alerts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("type", Text, nullable=False),
    Column("district_id", Text, nullable=False),
    Column("student_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("school_ids", ARRAY(Text), nullable=False),
    Column("programs", JSONB, nullable=False),
    Column("detail", JSONB, nullable=False),
    Column("suggested_school_id", Text),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("resolved_at", DateTime(timezone=True)),
    Column("trigger_event_id", Text, nullable=False),
    CheckConstraint("status IN ('open', 'acknowledged', 'resolved')", name="alerts_status"),
    Index(
        "alerts_one_active",
        "student_id",
        "type",
        unique=True,
        postgresql_where=text("status <> 'resolved'"),
    ),
    Index("alerts_district_status", "district_id", "status"),
    Index("alerts_student", "student_id"),
)
alert_history = Table(
    "alert_history",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("alert_id", Text, ForeignKey("alerts.id"), nullable=False),
    Column("action", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("trigger_event_id", Text, nullable=False),
    Column("school_ids", ARRAY(Text), nullable=False),
    Column("programs", ARRAY(Text), nullable=False),
    Index("alert_history_alert", "alert_id", "id"),
)

# The pull doors (migration 0009): per district its token's source, sync state, Events API cursor
# and lease; and the pollers' heartbeats (service/pull/store.py is their one writer).
SYNC_STATES = ("backfilling", "polling", "token_invalid", "no_token")
sync_districts = Table(
    "sync_districts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("token_source", Text),
    Column("sync_state", Text, nullable=False, server_default="no_token"),
    Column("cursor_event_id", Text),
    Column("cursor_created_at", DateTime(timezone=True)),
    Column("last_polled_at", DateTime(timezone=True)),
    Column("last_drained_at", DateTime(timezone=True)),
    Column("last_event_at", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("lease_owner", Text),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint(
        "sync_state IN ('backfilling', 'polling', 'token_invalid', 'no_token')",
        name="sync_districts_state",
    ),
)
pollers = Table(
    "pollers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("seen_at", DateTime(timezone=True)),
)

# Full syncs of a district from Clever's Data API (migration 0010): the request and the run's
# progress. One running backfill per district (`backfills_one_running`).
backfills = Table(
    "backfills",
    metadata,
    Column("id", Text, primary_key=True),
    Column("district_id", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="running"),
    Column("archive_missing", Boolean, nullable=False, server_default=text("true")),
    Column("force", Boolean, nullable=False, server_default=text("false")),
    Column("reason", Text, nullable=False),
    Column("start_event_id", Text),
    Column("start_read_at", DateTime(timezone=True)),
    Column("requested_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("runner", Text),
    Column("counts", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("missing", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("archived", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("error", Text),
    CheckConstraint(
        "status IN ('running', 'succeeded', 'failed', 'guarded')", name="backfills_status"
    ),
    CheckConstraint(
        "reason IN ('api', 'cli', 'first_contact', 'cursor_refused')", name="backfills_reason"
    ),
    Index(
        "backfills_one_running",
        "district_id",
        unique=True,
        postgresql_where=text("status = 'running'"),
    ),
    Index("backfills_district", "district_id", "requested_at"),
)
