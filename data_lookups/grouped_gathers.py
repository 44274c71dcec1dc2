"""Cache misses on the event loop: the entries of concurrent misses in one statement.

An application whose person has no cache entry (an issuance dropped it, or nobody
asked for the person before) needs the whole bundle from the registry. Read in the
thread pool, a miss cost a worker about 285 µs more CPU than a Redis hit: the hand-
over to a thread and back, the facts decoded into Python and encoded again for the
cache, and a blocking Redis write. Here the event loop reads it itself, on a
connection of its own (psycopg's ``AsyncConnection``, in autocommit: one statement
is one snapshot, the stamp read with the facts), and PostgreSQL builds the entry as
the cache stores it (:func:`data_lookups.facts.pg_cache_entries_sql`): the caller
decodes it once and stores the same bytes.

Misses queue their ID number and wait. While a statement is in flight, the misses
that arrive meanwhile wait for the next one, which takes them all (up to
``max_ids``): a lone miss goes at once, a burst shares one round trip. A person
asked for twice while queued or in flight is read once. A connection that broke is
dropped and the statement sent again once on a fresh one; if that fails too, or no
connection can be opened, or the statement takes longer than ``timeout`` (a
connection hanging without a reset would otherwise hold up every later miss), every
waiter of the statement gets :class:`RegistryUnavailable`; any other database error
is a :class:`RegistryError`. Once closed, it takes no more misses.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from approval_service.errors import RegistryError, RegistryUnavailable
from data_lookups.database import connection_lost
from data_lookups.facts import pg_cache_entries_sql

log = logging.getLogger(__name__)

_UNAVAILABLE = "the registry database cannot be reached; try again shortly"
#: one person: a scalar in place of ``unnest``, whose generic plan took twice as long
_ONE = pg_cache_entries_sql(one=True)
_MANY = pg_cache_entries_sql()


class GroupedGathers:
    """Reads cache entries (``{"s": stamp, "f": facts}`` as JSON bytes) for one event loop."""

    def __init__(self, conninfo: str, max_ids: int = 64, timeout: float = 10.0) -> None:
        self._conninfo = conninfo
        self._max_ids = max_ids
        self._timeout = timeout
        self._closed = False
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._queued: dict[str, asyncio.Future[bytes]] = {}
        self._in_flight: dict[str, asyncio.Future[bytes]] = {}
        self._task: asyncio.Task[None] | None = None
        self.statements = 0  # sent, for the tests and the curious

    async def entry(self, id_number: str) -> bytes:
        """The person's cache entry as PostgreSQL built it from one snapshot."""
        if self._closed:
            raise RegistryUnavailable("the service is shutting down; try again shortly")
        future = self._in_flight.get(id_number) or self._queued.get(id_number)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._queued[id_number] = future
            if self._task is None:
                self._task = asyncio.ensure_future(self._drain())
        # a waiter that gives up must not cancel the read the others wait for
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._queued:
                ids = list(self._queued)[: self._max_ids]
                self._in_flight = {i: self._queued.pop(i) for i in ids}
                try:
                    rows = await self._read(ids)
                except BaseException as error:
                    self._settle(error=error)
                    if not isinstance(error, Exception):
                        for waiting in self._queued.values():
                            waiting.cancel()
                        self._queued.clear()
                        raise
                else:
                    self._settle(rows=rows)
        finally:
            self._task = None
            self._in_flight = {}

    def _settle(
        self, rows: dict[str, bytes] | None = None, error: BaseException | None = None
    ) -> None:
        for id_number, future in self._in_flight.items():
            if future.done():
                continue
            if rows is not None and id_number in rows:
                future.set_result(rows[id_number])
                continue
            if error is not None and not isinstance(error, Exception):
                future.cancel()  # the loop is shutting down: so are its waiters
                continue
            future.set_exception(error or RegistryError("the registry returned no cache entry"))
            future.exception()  # retrieved: a waiter that gave up leaves nothing to log
        self._in_flight = {}

    async def _read(self, ids: list[str]) -> dict[str, bytes]:
        sql, params = (_ONE, {"id": ids[0]}) if len(ids) == 1 else (_MANY, {"ids": ids})
        for attempt in (1, 2):
            fresh = self._conn is None or self._conn.closed
            conn = await self._connection()
            try:
                async with asyncio.timeout(self._timeout):
                    rows = await self._fetch(conn, sql, params)
            except TimeoutError as error:
                await self._drop()
                raise RegistryUnavailable(_UNAVAILABLE) from error
            except psycopg.OperationalError as error:
                await self._drop()
                if fresh or attempt == 2 or not connection_lost(error):
                    raise RegistryUnavailable(_UNAVAILABLE) from error
                log.info("registry connection of the event loop lost: reading again")
                continue
            except psycopg.Error as error:
                raise RegistryError(f"reading facts failed: {type(error).__name__}") from error
            return {str(i): str(entry).encode() for i, entry in rows}
        raise AssertionError("unreachable")

    async def _fetch(
        self, conn: psycopg.AsyncConnection[Any], sql: str, params: dict[str, Any]
    ) -> list[Any]:
        cursor = await conn.execute(sql, params)
        self.statements += 1
        return await cursor.fetchall()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=5
                )
            except psycopg.Error as error:
                raise RegistryUnavailable(_UNAVAILABLE) from error
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except psycopg.Error:  # already broken: nothing more to free
                log.debug("closing a broken registry connection failed", exc_info=True)

    async def aclose(self) -> None:
        """Take no more misses, let the statement in flight finish, close the connection
        (call on its loop, before the loop ends)."""
        self._closed = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self._drop()
