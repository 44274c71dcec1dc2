"""A decision record no longer keeps its response document: the record's columns hold it.

Every document repeated the record's own columns (the decision, its reasons, the
result, the policy, the moment of decision, the deadline, the review) in about 590 of
a record's 2,100 bytes, written by every decision to the table, the WAL and the
pages. Records written from now on leave ``document`` NULL and are answered from
their columns (:func:`approval_service.service.documents.recorded_document`); those
written before keep theirs, answered as stored. Only the column's ``NOT NULL`` goes:
on PostgreSQL a catalogue change, no rewrite; SQLite copies the table (its review
queue's partial index is dropped before and made again after, since the copy would
not keep its ``WHERE``).

Earlier releases read the stored document and fail on a record without one (a
``GET``, a repeated key, a review): stop every process of an earlier release before
the first process of this one starts (each migrates the schema as it starts).

Going down refuses while any record has no document (SQL NULL or JSON ``null``): the
column's ``NOT NULL`` could only come back with every such document made again, which
needs the service's calendar (the supervision lights) and zone, not a migration's. An
earlier release refuses a newer schema anyway, so a way back is a backup from before
the upgrade.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_REFERRALS = "ix_applications_open_referrals"
OPEN = sa.text("review_state = 'open'")


def _set_nullable(nullable: bool) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.drop_index(OPEN_REFERRALS, table_name="applications")
    with op.batch_alter_table("applications") as batch:
        batch.alter_column("document", existing_type=sa.JSON(), nullable=nullable)
    if sqlite:
        op.create_index(
            OPEN_REFERRALS, "applications", ["deadline", "decided_at"], sqlite_where=OPEN
        )


def upgrade() -> None:
    _set_nullable(True)


def downgrade() -> None:
    # SQLAlchemy's JSON type writes a Python None as JSON null, not SQL NULL
    as_text = "CAST(document AS TEXT)"
    missing = (
        op.get_bind()
        .execute(
            sa.text(
                f"SELECT count(*) FROM applications WHERE document IS NULL OR {as_text} = 'null'"
            )
        )
        .scalar_one()
    )
    if missing:
        raise RuntimeError(
            f"{missing} decision records keep no document (written since migration 0017), "
            "which releases before it need: going below 0017 would have to make each again "
            "with the service's calendar and zone; stay at 0017 or newer, or restore a "
            "backup from before the upgrade"
        )
    _set_nullable(False)
