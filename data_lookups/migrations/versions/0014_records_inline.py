"""Decision records stay inline and uncompressed up to 4 kB (``toast_tuple_target``).

PostgreSQL compresses a row's largest values once the row passes about 2 kB (the
default ``toast_tuple_target``), and a typical decision record is just over that:
its trace (each condition with its values) was compressed in nine records of ten.
Compressing costs CPU on the hot path, on every insert, to save space in a table
that is written once and read rarely. Measured on PostgreSQL 15 by
``benchmarks/record_storage.py`` (real records copied in groups of 50): 32–35 µs of
backend CPU a record by default, 25–29 µs with a target of 4080 bytes; in return a
record takes about a quarter more room on disk (2,686 bytes against 2,145).

A storage parameter: no rewrite, existing rows stay as they are. SQLite has no
such thing: nothing to do there.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: bytes a record may take before PostgreSQL compresses or moves out its largest values
INLINE_UP_TO = 4080


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE applications SET (toast_tuple_target = {INLINE_UP_TO})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE applications RESET (toast_tuple_target)")
