"""``group_expect_current``: a group decided on stamps no longer current fails its transaction.

A small group of the group writer goes in one round trip (see
:mod:`approval_service.service.group_store`): the locks, the check that every
person's facts are still at the stamp the cache read them at, the issuance, the
records and the ``COMMIT``, all in one pipeline. The check cannot wait for the
client to read the stamps back, so PostgreSQL makes it: the statement counts the
people whose stamp moved and ends with ``SELECT group_expect_current(count)``,
which raises ``check_violation`` (constraint ``group_stale``) unless the count is
zero. PostgreSQL then skips the rest of the pipeline, the ``COMMIT`` included, and
the writer does the group the long way (stamps read first, stale entries decided
again on facts read in the transaction). The message names nobody.

SQLite reads the stamps first: nothing to do there.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE OR REPLACE FUNCTION group_expect_current(stale bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
  IF stale IS DISTINCT FROM 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'check_violation', CONSTRAINT = 'group_stale',
      MESSAGE = 'facts changed since they were cached: the group is decided again';
  END IF;
  RETURN stale;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS group_expect_current(bigint)")
