"""The roster: one table per Clever record kind, memberships, and every student's schools.

Each record keeps the version it was built from (`version_at` = the object's `last_modified`, else
the event's `created`; `version_delete`; `version_event`) and a tombstone (`deleted`) on delete.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

KINDS = ("districts", "schools", "users", "sections", "courses", "terms", "resources")
EXTRA: dict[str, list[sa.Column[object]]] = {
    "schools": [sa.Column("name", sa.Text)],
    "users": [
        sa.Column("sis_id", sa.Text),
        sa.Column("name_first", sa.Text),
        sa.Column("name_middle", sa.Text),
        sa.Column("name_last", sa.Text),
        sa.Column("grade", sa.Text),
        sa.Column("primary_school_id", sa.Text),
        sa.Column("roles", ARRAY(sa.Text), nullable=False, server_default="{}"),
    ],
    "sections": [sa.Column("school_id", sa.Text, nullable=False), sa.Column("name", sa.Text)],
}


def upgrade() -> None:
    for kind in KINDS:
        op.create_table(
            kind,
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("district_id", sa.Text, nullable=False),
            *EXTRA.get(kind, []),
            sa.Column("data", JSONB, nullable=False),
            sa.Column("deleted", sa.Boolean, nullable=False),
            sa.Column("version_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("version_delete", sa.Boolean, nullable=False),
            sa.Column("version_event", sa.Text, nullable=False),
            sa.Column(
                "updated_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.now(),
            ),
        )
        op.create_index(f"{kind}_district", kind, ["district_id"])
    op.create_index("sections_school", "sections", ["school_id"])

    # A section's full current lists. A member not known yet keeps its row (no foreign key).
    op.create_table(
        "section_members",
        sa.Column("section_id", sa.Text, primary_key=True),
        sa.Column("role", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.CheckConstraint("role IN ('student', 'teacher')", name="section_members_role"),
    )
    op.create_index("section_members_user", "section_members", ["user_id", "role"])

    # The schools each user's roles name (roles.student.schools, roles.teacher.schools, ...).
    op.create_table(
        "user_schools",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("role", sa.Text, primary_key=True),
        sa.Column("school_id", sa.Text, primary_key=True),
    )
    op.create_index("user_schools_school", "user_schools", ["school_id", "role"])

    # A student's schools: the newest user record's roles.student.schools, together with the
    # schools of the non-deleted sections that list the student.
    op.execute(
        """
        CREATE VIEW student_school_links AS
        SELECT us.user_id AS student_id, us.school_id, 'roster'::text AS via
          FROM user_schools us
         WHERE us.role = 'student'
        UNION
        SELECT m.user_id AS student_id, s.school_id, 'section'::text AS via
          FROM section_members m
          JOIN sections s ON s.id = m.section_id AND NOT s.deleted
         WHERE m.role = 'student'
        """
    )
    op.create_index("event_log_status", "event_log", ["status"])


def downgrade() -> None:
    op.drop_index("event_log_status", table_name="event_log")
    op.execute("DROP VIEW student_school_links")
    op.drop_table("user_schools")
    op.drop_table("section_members")
    for kind in reversed(KINDS):
        op.drop_table(kind)
