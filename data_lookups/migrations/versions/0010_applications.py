"""Decision records and the policy texts they were decided with.

Revision ID: 0010
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "applications",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("request_hash", sa.String(64)),
        sa.Column("item", sa.String(64), nullable=False),
        sa.Column("applicant_id", sa.String(18), nullable=False),
        sa.Column("applicant_masked", sa.String(18), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("policy_sha256", sa.String(64), nullable=False),
        sa.Column("business_date", sa.Date, nullable=False),
        sa.Column("decision", sa.String(10), nullable=False),
        sa.Column("reasons", JSONType, nullable=False),
        sa.Column("result", JSONType, nullable=False),
        sa.Column("facts", JSONType, nullable=False),
        sa.Column("trace", JSONType, nullable=False),
        sa.Column("form", JSONType, nullable=False),
        sa.Column("timings", JSONType, nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.Date),
        sa.Column("review_state", sa.String(10)),
        sa.Column("officer", sa.String(64)),
        sa.Column("reviewed_at", sa.DateTime(timezone=True)),
        sa.Column("document", JSONType, nullable=False),
        sa.UniqueConstraint("channel", "idempotency_key", name="uq_applications_idempotency"),
    )
    op.create_index("ix_applications_item_decided_at", "applications", ["item", "decided_at"])
    op.create_index("ix_applications_review", "applications", ["review_state", "deadline"])
    op.create_index("ix_applications_applicant", "applications", ["applicant_id", "item"])
    op.create_table(
        "policy_versions",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("item", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("policy_versions")
    op.drop_index("ix_applications_applicant", table_name="applications")
    op.drop_index("ix_applications_review", table_name="applications")
    op.drop_index("ix_applications_item_decided_at", table_name="applications")
    op.drop_table("applications")
