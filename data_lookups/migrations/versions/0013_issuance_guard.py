"""``issuance_expect_one``: a conditional issuance that changed no row fails its transaction.

The group writer issues by conditional statements (a card is cancelled only if it is
still valid, a fund pays only what its balance holds: see
:mod:`data_lookups.issuance_pipeline`). Such a statement that finds nothing to change
must lose the whole transaction. Checked by the client, from the statement's row
count, that costs a round trip of its own before the ``COMMIT`` can be sent. Checked
by PostgreSQL, the issuance, the records and the ``COMMIT`` go in one round trip:
the statement ends with ``SELECT issuance_expect_one(count(*), refusal)`` over the
rows it changed, and this function raises ``check_violation`` (constraint
``issuance_refused``, the refusal as its message) when that count is not one, so
PostgreSQL skips the ``COMMIT`` that follows and rolls the transaction back. Each
refusal therefore shows in PostgreSQL's log as an ``ERROR`` with its message, which
names the applicant only masked (and no statement parameters, by default).

SQLite issues one primitive at a time and checks in Python: nothing to do there.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE OR REPLACE FUNCTION issuance_expect_one(changed bigint, refusal text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
  IF changed IS DISTINCT FROM 1 THEN
    RAISE EXCEPTION USING ERRCODE = 'check_violation', CONSTRAINT = 'issuance_refused',
      MESSAGE = refusal;
  END IF;
  RETURN changed;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS issuance_expect_one(bigint, text)")
