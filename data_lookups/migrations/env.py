"""Alembic environment, configured programmatically by :func:`data_lookups.database.ensure_schema`.

The caller passes an open connection in ``config.attributes["connection"]``; there is
no ``alembic.ini``. Revisions live in ``versions/`` as one linear history shared by
the registry tables and the service's own tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from data_lookups.models import Base

config = context.config
connection: Connection | None = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through data_lookups.database.ensure_schema")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
