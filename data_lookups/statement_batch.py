"""Statements sent to PostgreSQL in one write, their results read in one go (libpq pipeline).

psycopg's pipeline sends each statement as it is queued (a ``poll`` and a ``send``
each) and processes every result in Python: for the group writer's statements (the
locks, the stamp check, what a group issues, its records, the ``COMMIT``) that cost
the writer thread, which holds the GIL, about 200 µs for a small group (eight records)
against 80 µs when the same statements go to libpq's own pipeline, buffered and sent
at once with the ``Sync`` (``benchmarks/pipeline_sends.py``). PostgreSQL does the
same work either way.

A :class:`StatementBatch` takes statements in psycopg's syntax (``%s`` or
``%(name)s``) with their parameters, dumps them with psycopg's adapters while
nothing is sent yet (a value that cannot be adapted refuses the batch before
anything reaches the server), then sends the whole batch and waits for its
``Sync``. The first statement PostgreSQL refuses is raised as psycopg raises it
(:func:`psycopg.errors.error_from_result`: a ``UniqueViolation`` is a
``psycopg.IntegrityError``), after every result is read; the statements after it
were skipped by PostgreSQL, and a transaction the batch began is left failed for
the caller to roll back.

Statements are prepared (parsed and planned once per connection, the ``Parse`` sent
in the batch that first uses them) only on a connection where psycopg prepares
nothing itself (``prepare_threshold=None``): psycopg's rollback deallocates *every*
prepared statement of the session when it had prepared any, which would silently
drop these too. Elsewhere each statement is sent unnamed, parsed each time.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import select
import weakref
from collections.abc import Generator, Mapping, Sequence
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

Params = Sequence[Any] | Mapping[str, Any] | None

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")
_PIPELINE_SYNC = pq.ExecStatus.PIPELINE_SYNC
_FATAL = pq.ExecStatus.FATAL_ERROR
_PARSED = pq.ExecStatus.COMMAND_OK
_TUPLES = pq.ExecStatus.TUPLES_OK
_COPY = (pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_OUT, pq.ExecStatus.COPY_BOTH)
_IDLE = pq.TransactionStatus.IDLE
Key = tuple[bytes, tuple[int, ...]]  # (query, parameter types)
Item = tuple[bytes, Sequence[Any], tuple[int, ...], list[pq.Format], bool]
#: per connection: the name each statement is prepared under
_PREPARED: weakref.WeakKeyDictionary[psycopg.Connection[Any], dict[Key, bytes]]
_PREPARED = weakref.WeakKeyDictionary()
_NAMES = itertools.count()  # names never reused, on any connection


@lru_cache(maxsize=512)
def converted(sql: str) -> tuple[bytes, tuple[str, ...] | int]:
    """``sql`` with ``$n`` placeholders, and the parameters' names in order (named
    style; a name used twice is one parameter) or their count (positional)."""
    names: list[str] = []
    positional = 0

    def number(match: re.Match[str]) -> str:
        nonlocal positional
        if match.group(0) == "%%":
            return "%"
        name = match.group(1)
        if name is None:
            positional += 1
            return f"${positional}"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    query = _PLACEHOLDER.sub(number, sql)
    if names and positional:
        raise ValueError(f"a statement mixes %s and %(name)s placeholders: {sql[:60]!r}")
    return query.encode(), (tuple(names) if names else positional)


class StatementBatch:
    """Statements for one round trip on ``driver`` (see the module docstring)."""

    def __init__(self, driver: psycopg.Connection[Any]) -> None:
        self._driver = driver
        self._tx = Transformer(driver)
        self._prepares = driver.prepare_threshold is None
        self._items: list[Item] = []  # (query, dumped parameters, types, formats, prepare)
        self._results: list[list[pq.abc.PGresult]] | None = None  # an item's, once run

    def __len__(self) -> int:
        return len(self._items)

    def add(self, sql: str, params: Params = None, *, prepare: bool = True) -> int:
        """Queue one statement, its parameters dumped now (psycopg's errors if not);
        returns its index, for :meth:`rows` once the batch has run."""
        if params is None:  # as psycopg: a statement without parameters goes as written
            query, values = sql.encode(), []
        else:
            query, wanted = converted(sql)
            if isinstance(wanted, tuple):
                if not isinstance(params, Mapping):
                    raise TypeError(f"named placeholders want a mapping: {sql[:60]!r}")
                values = [params[name] for name in wanted]
            else:
                if isinstance(params, Mapping | str | bytes):
                    raise TypeError(f"%s placeholders want a sequence: {sql[:60]!r}")
                values = list(params)
                if len(values) != wanted:
                    count = f"{wanted} placeholders, {len(values)} parameters"
                    raise TypeError(f"{count}: {sql[:60]!r}")
        dumped = self._tx.dump_sequence(values, [PyFormat.AUTO] * len(values)) if values else []
        types = tuple(self._tx.types or ()) if values else ()
        formats = list(self._tx.formats or ()) if values else []
        self._items.append((query, dumped, types, formats, prepare and self._prepares))
        return len(self._items) - 1

    def add_many(self, sql: str, params_seq: Sequence[Params]) -> None:
        for params in params_seq:
            self.add(sql, params)

    def rows(self, index: int) -> list[tuple[Any, ...]]:
        """The rows statement ``index`` returned, loaded by psycopg's loaders (a ``json``
        column as Python values); ``PipelineAborted`` if the batch did not run whole."""
        if self._results is None:
            raise psycopg.errors.PipelineAborted("the batch did not run: no results")
        loaded: list[tuple[Any, ...]] = []
        for result in self._results[index]:
            if result.status == _TUPLES:
                self._tx.set_pgresult(result)
                loaded.extend(self._tx.load_rows(0, result.ntuples, tuple))
        return loaded

    def run(self) -> None:
        """Send the batch and its ``Sync`` in one write and read every result.

        Raises the first statement's error PostgreSQL returned (what came after it was
        skipped); ``psycopg.OperationalError`` when the connection is lost. Runs once:
        the statements are not kept.
        """
        items, self._items = self._items, []
        if not items:
            self._results = []
            return
        driver = self._driver
        with driver.lock:
            slots, parsing = self._send_all(items)
            try:
                results = _drive(driver.pgconn)
            except BaseException:
                _abandon(driver)
                raise
        self._settle(slots, parsing, results)

    async def arun(self) -> None:
        """:meth:`run` for a coroutine: waiting for the results does not block the event
        loop, which reads them when the socket is readable.

        The connection must belong to this event loop's thread alone while the batch
        runs (the group writer's on-loop connection does). The statements are written as
        in :meth:`run`: a batch past the socket's buffer (far more than a small group's)
        would block the loop while it is written. Cancelled while waiting, the
        connection is closed, as when it is lost: its results would never be read.
        """
        items, self._items = self._items, []
        if not items:
            self._results = []
            return
        driver = self._driver
        with driver.lock:  # never contended: the connection is this loop's alone
            slots, parsing = self._send_all(items)
            try:
                results = await _adrive(driver.pgconn)
            except BaseException:
                _abandon(driver)
                raise
        self._settle(slots, parsing, results)

    def _send_all(self, items: list[Item]) -> tuple[list[int], list[tuple[int, Key, bytes]]]:
        """Put libpq in pipeline mode and send the batch and its ``Sync``, for
        :func:`_drive` or :func:`_adrive` to read; returns :func:`_send`'s slots."""
        driver = self._driver
        if driver.pgconn.pipeline_status != pq.PipelineStatus.OFF:
            raise psycopg.ProgrammingError("a statement batch cannot run inside a pipeline")
        names = _PREPARED.setdefault(driver, {}) if self._prepares else {}
        pgconn = driver.pgconn
        # psycopg begins a transaction before a statement outside autocommit
        begin = not driver.autocommit and pgconn.transaction_status == _IDLE
        pgconn.enter_pipeline_mode()
        try:
            if begin:
                pgconn.send_query_params(_begin(driver), None)
            slots, parsing = _send(pgconn, items, names, first_slot=int(begin))
            pgconn.pipeline_sync()
            _flush(pgconn)
        except BaseException:
            _abandon(driver)
            raise
        return slots, parsing

    def _settle(
        self,
        slots: list[int],
        parsing: list[tuple[int, Key, bytes]],
        results: list[list[pq.abc.PGresult]],
    ) -> None:
        """Note what PostgreSQL prepared, raise the first error it returned, keep the
        results of each statement."""
        names = _PREPARED.setdefault(self._driver, {}) if self._prepares else {}
        for slot, key, name in parsing:  # known prepared only once PostgreSQL said so
            parsed = results[slot] if slot < len(results) else []
            if parsed and parsed[0].status == _PARSED:
                names[key] = name
        for statement in results:
            for result in statement:
                if result.status == _FATAL:
                    encoding = self._driver.info.encoding
                    raise psycopg.errors.error_from_result(result, encoding=encoding)
        self._results = [results[slot] for slot in slots]


def _abandon(driver: psycopg.Connection[Any]) -> None:
    """Results unread and libpq still in pipeline mode: psycopg could not use the
    connection again. Closed, so that its owner drops it (the group writer does, seeing
    it closed); the caller raises what went wrong as it came."""
    driver.close()


def _drive(pgconn: pq.abc.PGconn) -> list[list[pq.abc.PGresult]]:
    """Read a sent batch's results, waiting for the socket in this thread."""
    steps = _read_to_sync(pgconn)
    try:
        while True:
            next(steps)
            _wait(pgconn, select.POLLIN)
            pgconn.consume_input()
    except StopIteration as done:
        pgconn.exit_pipeline_mode()
        results: list[list[pq.abc.PGresult]] = done.value
        return results


async def _adrive(pgconn: pq.abc.PGconn) -> list[list[pq.abc.PGresult]]:
    """Read a sent batch's results, awaiting the socket on the running event loop."""
    steps = _read_to_sync(pgconn)
    loop = asyncio.get_running_loop()
    try:
        while True:
            next(steps)
            await _readable(loop, pgconn.socket)
            pgconn.consume_input()
    except StopIteration as done:
        pgconn.exit_pipeline_mode()
        results: list[list[pq.abc.PGresult]] = done.value
        return results


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Wait until ``fd`` can be read (or has failed), without blocking the loop."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _send(
    pgconn: pq.abc.PGconn, items: list[Item], names: dict[Key, bytes], first_slot: int
) -> tuple[list[int], list[tuple[int, Key, bytes]]]:
    """Queue every statement in libpq's buffer (it writes only past 64 kB). Returns each
    item's result slot and the (slot, key, name) of each statement parsed here."""
    slots: list[int] = []
    parsing: list[tuple[int, Key, bytes]] = []
    fresh: dict[Key, bytes] = {}
    slot = first_slot
    for query, params, types, formats, prepare in items:
        if not prepare:
            pgconn.send_query_params(query, params, types, formats)
        else:
            key = (query, types)
            name = names.get(key) or fresh.get(key)
            if name is None:
                name = fresh[key] = f"miaopi_b{next(_NAMES)}".encode()
                pgconn.send_prepare(name, query, types)
                parsing.append((slot, key, name))
                slot += 1
            pgconn.send_query_prepared(name, params, formats)
        slots.append(slot)
        slot += 1
    return slots, parsing


def _begin(driver: psycopg.Connection[Any]) -> bytes:
    """The ``BEGIN`` psycopg would send, with the connection's transaction settings."""
    parts = [b"BEGIN"]
    if driver.isolation_level is not None:
        level = psycopg.IsolationLevel(driver.isolation_level).name.replace("_", " ")
        parts.append(b"ISOLATION LEVEL " + level.encode())
    if driver.read_only is not None:
        parts.append(b"READ ONLY" if driver.read_only else b"READ WRITE")
    if driver.deferrable is not None:
        parts.append(b"DEFERRABLE" if driver.deferrable else b"NOT DEFERRABLE")
    return b" ".join(parts)


def _wait(pgconn: pq.abc.PGconn, events: int) -> int:
    poller = select.poll()  # not select(): a busy server's descriptors pass 1024
    poller.register(pgconn.socket, events)
    ready = poller.poll()
    return ready[0][1] if ready else 0


def _flush(pgconn: pq.abc.PGconn) -> None:
    """Write libpq's buffer out, reading meanwhile so that a server blocked on writing
    its results to us cannot hold up our writing to it."""
    while pgconn.flush() == 1:
        if _wait(pgconn, select.POLLIN | select.POLLOUT) & (select.POLLIN | select.POLLERR):
            pgconn.consume_input()


def _read_to_sync(
    pgconn: pq.abc.PGconn,
) -> Generator[None, None, list[list[pq.abc.PGresult]]]:
    """Every statement's results (a list each), up to the batch's ``Sync``: yields
    whenever libpq needs more input, which the driver then waits for and consumes."""
    results: list[list[pq.abc.PGresult]] = []
    current: list[pq.abc.PGresult] = []
    while True:
        while pgconn.is_busy():
            yield
        result = pgconn.get_result()
        if result is None:
            results.append(current)
            current = []
        elif result.status == _PIPELINE_SYNC:
            return results
        elif result.status in _COPY:
            raise psycopg.NotSupportedError("COPY cannot be sent in a statement batch")
        else:
            current.append(result)
