"""Programs (the catalog, seeded), program assignments, and the single-school rule's alerts.

`alerts_one_active` makes "one alert per student while the conflict lasts" a database guarantee,
not only a property of the code: at most one unresolved alert per student and type.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

CATALOG = [
    ("imagine_plus_assessment", "Imagine+ Assessment", True),
    ("mypath_math", "MyPath Math / Imagine+ Math", True),
    ("mypath_reading", "MyPath Reading", True),
    ("imagine_purpose", "Imagine Purpose", True),
    ("imagine_language_literacy", "Imagine Language & Literacy", False),
    ("imagine_math_facts", "Imagine Math Facts", False),
    ("imagine_espanol", "Imagine Español", False),
]


def upgrade() -> None:
    programs = op.create_table(
        "programs",
        sa.Column("code", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("single_school", sa.Boolean, nullable=False),
    )
    op.bulk_insert(programs, [{"code": c, "name": n, "single_school": s} for c, n, s in CATALOG])
    op.create_table(
        "program_assignments",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("program", sa.Text, sa.ForeignKey("programs.code"), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("scope_id", sa.Text, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "scope IN ('district', 'school', 'section', 'student')",
            name="program_assignments_scope",
        ),
        sa.UniqueConstraint("program", "scope", "scope_id", name="program_assignments_unique"),
    )
    op.create_index("program_assignments_scope_id", "program_assignments", ["scope_id"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("district_id", sa.Text, nullable=False),
        sa.Column("student_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("school_ids", ARRAY(sa.Text), nullable=False),
        sa.Column("programs", JSONB, nullable=False),  # [{code, name, sources: [...]}]
        sa.Column("detail", JSONB, nullable=False),  # the last message's data
        sa.Column("suggested_school_id", sa.Text),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("trigger_event_id", sa.Text, nullable=False),
        sa.CheckConstraint("status IN ('open', 'acknowledged', 'resolved')", name="alerts_status"),
    )
    op.create_index(
        "alerts_one_active",
        "alerts",
        ["student_id", "type"],
        unique=True,
        postgresql_where=sa.text("status <> 'resolved'"),
    )
    op.create_index("alerts_district_status", "alerts", ["district_id", "status"])
    op.create_index("alerts_student", "alerts", ["student_id"])
    op.create_table(
        "alert_history",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("alert_id", sa.Text, sa.ForeignKey("alerts.id"), nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trigger_event_id", sa.Text, nullable=False),
        sa.Column("school_ids", ARRAY(sa.Text), nullable=False),
        sa.Column("programs", ARRAY(sa.Text), nullable=False),
    )
    op.create_index("alert_history_alert", "alert_history", ["alert_id", "id"])


def downgrade() -> None:
    op.drop_table("alert_history")
    op.drop_table("alerts")
    op.drop_table("program_assignments")
    op.drop_table("programs")
