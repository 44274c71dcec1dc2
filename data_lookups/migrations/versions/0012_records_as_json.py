"""Decision records keep their JSON as ``json`` (text as written), not ``jsonb``.

Every application writes one record on the hot path, and nothing searches inside
its JSON: it is read back whole (a replayed answer, an explanation, statistics).
``jsonb`` costs PostgreSQL a conversion per value and made a typical record large
enough to be compressed on every insert; ``json`` is only checked. Measured on
PostgreSQL 15: about half the backend CPU per record (README, "Load test").
SQLite stores JSON as text either way, so this changes nothing there.

On PostgreSQL the table is rewritten once, under an exclusive lock: on a large
table, upgrade in a quiet hour (24 s for a million records on the machine of the
README's figures).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("reasons", "result", "facts", "trace", "form", "timings", "document")


def _retype(kind: str) -> None:
    """All columns in one ALTER TABLE, so a large table is rewritten once, not seven times."""
    if op.get_bind().dialect.name != "postgresql":
        return
    changes = ", ".join(f"ALTER COLUMN {c} TYPE {kind} USING {c}::{kind}" for c in COLUMNS)
    op.execute(f"ALTER TABLE applications {changes}")


def upgrade() -> None:
    _retype("json")


def downgrade() -> None:
    _retype("jsonb")
