"""Decision records keep only the indexes a query uses: two fewer written per decision.

Every decision inserts one row into ``applications``, and each index of the table
costs PostgreSQL an insertion (a descent, a page change, a WAL record) on the hot
path. Of its five, two served no query: ``(item, decided_at)`` and
``(applicant_id, item)``. The review queue's ``(review_state, deadline)`` held every
decision, though only referrals (a few in a hundred) are ever looked up in it. Now:

- ``ix_applications_open_referrals``: ``(deadline, decided_at)`` of open referrals
  only (a partial index), the review queue's filter and order; a case leaves it when
  it is reviewed;
- ``ix_applications_business_date``: the statistics' range of business dates, which
  no index served before (they read the whole table);
- the primary key and the ``Idempotency-Key`` constraint, as before.

So a decision that is not referred writes three index entries where it wrote five.
Both backends. Building the new indexes blocks decisions until they are built (a plain
``CREATE INDEX``, which a table of millions of records takes a while over): upgrade
between business days. Not ``CONCURRENTLY``: migrations run at service start, where
the other starters wait on the migration lock inside transactions that ``CONCURRENTLY``
would wait for in turn (a deadlock).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = sa.text("review_state = 'open'")


def upgrade() -> None:
    op.drop_index("ix_applications_item_decided_at", table_name="applications")
    op.drop_index("ix_applications_applicant", table_name="applications")
    op.drop_index("ix_applications_review", table_name="applications")
    op.create_index(
        "ix_applications_open_referrals",
        "applications",
        ["deadline", "decided_at"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )
    op.create_index("ix_applications_business_date", "applications", ["business_date"])


def downgrade() -> None:
    op.drop_index("ix_applications_business_date", table_name="applications")
    op.drop_index("ix_applications_open_referrals", table_name="applications")
    op.create_index("ix_applications_review", "applications", ["review_state", "deadline"])
    op.create_index("ix_applications_applicant", "applications", ["applicant_id", "item"])
    op.create_index("ix_applications_item_decided_at", "applications", ["item", "decided_at"])
