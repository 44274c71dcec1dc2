"""The statements of a group commit, run on the connection of the group's transaction.

On PostgreSQL they go straight through psycopg, with no SQLAlchemy statement
building on the hot path: one statement locks every person of the group (in one
order, so two groups cannot deadlock), one reads the first answers of repeated
``Idempotency-Key``s, and ``COPY`` inserts the records. On SQLite (the embedded
default, where the write transaction already serialises every writer) the same
work goes through SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import JSON, Connection, Table, exc, insert, select, tuple_

from approval_service.errors import RegistryUnavailable
from approval_service.service.documents import dumps
from approval_service.service.records import applications
from data_lookups.database import is_postgres

#: (channel, Idempotency-Key) -> (hash of the first request, its response document)
Earlier = dict[tuple[str, str], tuple[str | None, dict[str, Any]]]

# ID numbers are digits and X: joined by commas they pass as one text parameter,
# which psycopg sends without inspecting a list element by element
_LOCK = (
    "SELECT count(pg_advisory_xact_lock(hashtextextended(id, 0))) "
    "FROM unnest(string_to_array(%(ids)s, ',')) AS id"
)
# joined on both columns so the unique index (channel, idempotency_key) is searched
_EARLIER = (
    "SELECT a.channel, a.idempotency_key, a.request_hash, a.document FROM applications a "
    "JOIN unnest(%(channels)s::text[], %(keys)s::text[]) AS k(channel, key) "
    "ON a.channel = k.channel AND a.idempotency_key = k.key"
)


@contextmanager
def _translated(statement: str) -> Iterator[None]:
    """psycopg's errors as SQLAlchemy's (constraints) or the registry's (connectivity)."""
    try:
        yield
    except psycopg.IntegrityError as error:
        raise exc.IntegrityError(statement, None, error) from error
    except psycopg.OperationalError as error:
        raise RegistryUnavailable("the registry database cannot be reached; retry later") from error


def _driver(conn: Connection) -> psycopg.Connection[Any] | None:
    if not is_postgres(conn):
        return None
    driver: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    return driver


def lock_people(conn: Connection, applicant_ids: Iterable[str]) -> None:
    """Take every person's lock until the transaction ends (PostgreSQL; no-op on SQLite)."""
    driver = _driver(conn)
    if driver is not None:
        with _translated(_LOCK):
            driver.execute(_LOCK, {"ids": joined_ids(applicant_ids)})


def joined_ids(id_numbers: Iterable[str]) -> str:
    """Distinct ID numbers, sorted (the lock order), comma-separated."""
    ids = sorted(set(id_numbers))
    if any("," in i for i in ids):
        raise ValueError("an ID number cannot contain a comma")
    return ",".join(ids)


def earlier_answers(conn: Connection, keys: Iterable[tuple[str, str]]) -> Earlier:
    """The recorded answers for these (channel, key) pairs, where there are any."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    driver = _driver(conn)
    if driver is not None:
        params = {"channels": [c for c, _ in wanted], "keys": [k for _, k in wanted]}
        with _translated(_EARLIER):
            rows = driver.execute(_EARLIER, params).fetchall()
    else:
        c = applications.c
        query = select(c.channel, c.idempotency_key, c.request_hash, c.document).where(
            tuple_(c.channel, c.idempotency_key).in_(sorted(wanted))
        )
        rows = [tuple(r) for r in conn.execute(query)]
    return {(channel, key): (digest, dict(document)) for channel, key, digest, document in rows}


def insert_rows(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows that all have the same keys (PostgreSQL: one ``COPY``).

    A None in a JSON column is stored as JSON ``null``, as SQLAlchemy's JSON type does.
    """
    if not rows:
        return
    driver = _driver(conn)
    if driver is None:
        conn.execute(insert(table), list(rows))
        return
    columns = list(rows[0])
    json_columns = {name for name in columns if isinstance(table.c[name].type, JSON)}
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    with _translated(statement), driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(
                [dumps(row[name]) if name in json_columns else row[name] for name in columns]
            )
