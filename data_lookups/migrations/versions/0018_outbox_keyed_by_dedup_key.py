"""The outbox's dedup key is its primary key: one index fewer written per decision.

Every decision queues one message, and each of the outbox's indexes costs PostgreSQL
an insertion on the hot path. Its ``id`` (a time-ordered identifier) served no query:
the notifier claims and marks messages by their dedup key, which is unique already
(an application's event, ``<application id>:decided``) and is the webhook's
``Idempotency-Key``. So ``id`` goes, and the dedup key's unique constraint becomes the
primary key: two indexes per message (the key and the due messages') where there were
three. ``benchmarks/outbox_keys.py``: 1.3 µs of PostgreSQL's CPU and 97 bytes less a
message (README, "Load test").

PostgreSQL drops the column (a catalogue change) and builds the new key's index, one
pass over the table under an exclusive lock; SQLite copies the table. Going down gives
every message an ``id`` again, made from its dedup key (PostgreSQL) or at random
(SQLite): nothing reads them.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("uq_outbox_dedup_key", type_="unique")
        batch.drop_constraint("pk_outbox", type_="primary")
        batch.drop_column("id")
        batch.create_primary_key("pk_outbox", ["dedup_key"])


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("id", sa.String(40)))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE outbox SET id = md5(dedup_key)")
    else:
        op.execute("UPDATE outbox SET id = lower(hex(randomblob(16)))")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("pk_outbox", type_="primary")
        batch.alter_column("id", existing_type=sa.String(40), nullable=False)
        batch.create_primary_key("pk_outbox", ["id"])
        batch.create_unique_constraint("uq_outbox_dedup_key", ["dedup_key"])
