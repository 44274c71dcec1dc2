"""Warming the fact cache: many people's bundles into Redis before the traffic comes.

``warm(engine, cache, ids)`` reads the entries in chunks, each chunk with one
PostgreSQL statement that builds every person's entry (stamp and facts, from
one snapshot) as the JSON the cache stores, and writes them to Redis with one
pipeline per chunk. Python neither decodes nor encodes a fact. Entries are
stamp-validated like any other, so warming can never make a read stale: an
entry older than the registry is simply not used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice

import psycopg
from sqlalchemy import Engine, text

from approval_service.errors import FactsError, RegistryUnavailable
from data_lookups.database import is_postgres
from data_lookups.fact_cache import RedisFactCache
from data_lookups.facts import pg_cache_entries_sql

CHUNK = 2000


def registry_ids(engine: Engine, limit: int | None = None) -> list[str]:
    """Every resident's ID number (or the first ``limit`` of them), in ID order."""
    query = "SELECT id_number FROM population ORDER BY id_number"
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text(query))]


def _chunks(ids: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(ids)
    while chunk := list(islice(it, size)):
        yield chunk


def warm(
    engine: Engine,
    cache: RedisFactCache,
    ids: Iterable[str],
    *,
    chunk: int = CHUNK,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Store the current entry of every listed person in Redis; returns how many."""
    if not is_postgres(engine):
        raise FactsError("warming reads the registry from PostgreSQL; set MIAOPI_DATABASE_URL")
    statement = pg_cache_entries_sql()
    written = 0
    pooled = engine.raw_connection()
    driver: psycopg.Connection[tuple[str, str]] = pooled.driver_connection  # type: ignore[assignment]
    try:
        driver.autocommit = True  # each chunk's statement is its own snapshot
        for ids_chunk in _chunks(ids, chunk):
            try:
                rows = driver.execute(statement, {"ids": ids_chunk}).fetchall()
            except psycopg.OperationalError as error:
                raise RegistryUnavailable(
                    "the registry database cannot be reached; retry later"
                ) from error
            cache.put_entries(rows)
            written += len(rows)
            if progress is not None:
                progress(len(rows))
    finally:
        try:  # back to the pool as it came: in transaction mode
            if not driver.closed:
                driver.autocommit = False
        finally:
            pooled.close()
    return written
