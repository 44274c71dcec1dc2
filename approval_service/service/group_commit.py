"""Grouped commits: many applications in one transaction, none answered before it is durable.

Callers hand their work to one writer thread and wait: a thread on a
:class:`~concurrent.futures.Future` (:meth:`GroupCommitter.write`), a coroutine
on an asyncio future (:meth:`GroupCommitter.run`). Given ``at_once_on_loop``, a
coroutine's entry goes first to the writer of its own event loop
(:mod:`loop_writer`), which writes a small group in one round trip awaited there
and hands the writer thread only what it cannot do that way. The writer takes everything
queued (up to ``max_batch``), begins one write transaction on its own
connection, lets the ``process`` function do the whole group on it (lock,
check, issue, insert), commits, and only then answers the callers: threads one
by one, each event loop with a single wake-up for all its waiters. ``process``
may send the ``BEGIN`` and the ``COMMIT`` itself, with its first and last
statements, to save round trips (the group recorder does on PostgreSQL); the
writer's commit then finds nothing left to do. Nothing may fail in ``process``
after its ``COMMIT``: a group that raises is done again. A ``process`` that
raises has committed nothing, except when the connection is lost with the
``COMMIT`` in flight: then nobody can know, as with the writer's own commit, and
the callers get :class:`RegistryUnavailable`. Under load one
commit (one WAL flush, one set of round trips) serves many applications; with a
single request in flight it costs what a plain transaction costs.

Under moderate load the groups are small (two or three entries) and the machine
spends much of its CPU on their fixed cost (a transaction, a WAL flush, the hand-
overs). So when the writer is busy (its last group ended under
:data:`BUSY_WITHIN` ago and held more than one entry), a group smaller than
``linger_until`` waits up to ``linger`` seconds for more entries before it is
written. A lone request on a quiet service never waits, nor does a full group; but
once groups of two come often (from about 1,000/s on two cores) the wait begins and
tends to keep itself going, so a request may wait up to ``linger`` there.

What must follow a commit but need not hold up the next group (the recorder drops
cache entries the group made old, a Redis round trip) can run on the callers' event
loops instead of the writer: an ``after_commit_on_loop`` coroutine is started on each
loop, right after that loop's answers, with that loop's share of the group. Entries
of threads still go to ``after_commit`` in the writer. Neither hook can fail anything:
the group is durable and answered by then, and what a hook raises is logged.

When a group fails (a repeated ``Idempotency-Key`` racing its twin, a registry
constraint, a deadlock), its transaction is rolled back whole and the writer
runs every entry again alone, one transaction each, so only the entry at fault
sees the error; nothing is half-written. When the database cannot be reached,
the whole group gets that error at once (retrying each alone would only wait
for the same outage again and again). A connection that failed is dropped and
the next group opens a new one. An ``on_connect`` function sets up each connection
the writer opens (the service's: ``group_store.writer_session``) before its first group.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine

from approval_service.errors import RegistryUnavailable
from approval_service.service.group_entries import (
    After,
    AfterCommitOnLoop,
    Entry,
    discard_connection,
    settle_on_loop,
)
from approval_service.service.loop_writer import AtOnceOnLoop, LoopWriter
from data_lookups.database import unavailable_as_registry_error, write_options

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: does a group of entries on a connection in a write transaction; one result per entry
Process = Callable[[Connection, Sequence[T]], list[R]]
#: runs in the writer after a group committed and its callers were answered
AfterCommit = Callable[[Sequence[T], Sequence[R]], None]
#: told when the writer starts on a group: its size, and how long its first entry waited (s)
ObserveGroup = Callable[[int, float], None]
#: sets up each connection the writer opens, before its first group (session settings)
OnConnect = Callable[[Connection], None]
#: the writer counts as busy when its last group of two or more ended this recently (s)
BUSY_WITHIN = 0.005


class GroupCommitter(Generic[T, R]):
    def __init__(
        self,
        engine: Engine,
        process: Process[T, R],
        after_commit: AfterCommit[T, R] | None = None,
        max_batch: int = 256,
        linger: float = 0.0,
        linger_until: int = 16,
        after_commit_on_loop: AfterCommitOnLoop[T, R] | None = None,
        observe_group: ObserveGroup | None = None,
        on_connect: OnConnect | None = None,
        at_once_on_loop: AtOnceOnLoop[T, R] | None = None,
    ) -> None:
        self.engine = engine
        self.at_once_on_loop = at_once_on_loop
        # each event loop's writer, when at_once_on_loop is given (see loop_writer)
        self._loop_writers: dict[asyncio.AbstractEventLoop, LoopWriter[T, R]] = {}
        # loops whose writer was closed (aclose_loop): their later entries go to the thread
        self._closed_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self.on_connect = on_connect
        self.observe_group = observe_group
        self.process = process
        self.after_commit = after_commit
        self.after_commit_on_loop = after_commit_on_loop
        self.max_batch = max_batch
        self.linger = linger  # seconds a small group of a busy writer waits for more
        self.linger_until = min(linger_until, max_batch)
        self._last_end = float("-inf")  # when the last group was done (time.monotonic)
        self._last_size = 0
        self._thread_busy = False  # the writer thread is on a group
        self._queue: queue.SimpleQueue[Entry[T, R] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counting = threading.Lock()
        self._conn: Connection | None = None  # the writer thread's own connection
        self._hooks: set[asyncio.Task[None]] = set()  # on-loop hooks running, any loop
        self.batches = 0
        self.entries = 0

    def submit(self, item: T) -> Future[R]:
        """Queue one entry; the future resolves after its group committed (or fails)."""
        self._ensure_started()
        entry: Entry[T, R] = Entry(item, time.perf_counter(), future=Future())
        self._queue.put(entry)
        assert entry.future is not None
        return entry.future

    def write(self, item: T) -> R:
        """Do one entry durably and return its result, or raise what doing it raised."""
        return self.submit(item).result()

    async def run(self, item: T) -> R:
        """:meth:`write` for a coroutine: the event loop is not blocked while it waits.
        With ``at_once_on_loop`` the entry goes to this loop's writer first, unless
        :meth:`aclose_loop` closed it."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[R] = loop.create_future()
        entry: Entry[T, R] = Entry(item, time.perf_counter(), loop=loop, waiter=waiter)
        writer = self._loop_writer(loop)
        if writer is not None:
            writer.submit(entry)
        else:
            self._ensure_started()
            self._queue.put(entry)
        return await waiter

    def _loop_writer(self, loop: asyncio.AbstractEventLoop) -> LoopWriter[T, R] | None:
        writer = self._loop_writers.get(loop)
        if writer is None and self.at_once_on_loop is not None:
            with self._lock:
                if loop in self._closed_loops:
                    return None
                writer = self._loop_writers.setdefault(loop, LoopWriter(self, self.at_once_on_loop))
        return writer

    async def aclose_loop(self) -> None:
        """Close this event loop's writer (its group in flight finishes first), before the
        loop closes; the loop's later entries go to the writer thread. :meth:`close`
        drops the connections of loops that did not."""
        loop = asyncio.get_running_loop()
        with self._lock:
            writer = self._loop_writers.pop(loop, None)
            self._closed_loops.add(loop)
        if writer is not None:
            await writer.aclose()

    # what a loop's writer uses ---------------------------------------------------
    def hand_over(self, batch: Sequence[Entry[T, R]]) -> None:
        """Entries a loop's writer could not do at once: the writer thread does them."""
        self._ensure_started()
        for entry in batch:
            self._queue.put(entry)

    def count_group(self, size: int) -> None:
        """A group committed (by the writer thread or a loop's writer)."""
        with self._counting:  # not _lock: close() holds that while the thread finishes
            self.batches += 1
            self.entries += size

    def loop_hook(self, items: list[T], results: list[R]) -> After | None:
        """The on-loop hook to start after a loop's own group, or None; with only the
        writer's hook, that runs at once (on the loop: it may block it briefly)."""
        if self.after_commit_on_loop is not None:
            return (self.after_commit_on_loop, items, results, self._hooks)
        self._call_after(items, results)
        return None

    async def drain_loop_hooks(self) -> None:
        """Wait for the on-loop hooks running on this event loop, those started meanwhile
        too (before the loop closes the clients they use). Being cancelled does not
        cancel them."""
        loop = asyncio.get_running_loop()
        while mine := [task for task in list(self._hooks) if task.get_loop() is loop]:
            await asyncio.wait(mine)

    def close(self) -> None:
        """Let the writer thread finish what was queued, then drop every connection. The
        lock is held while the thread finishes: no second close, and no new thread on
        its connection, can start meanwhile."""
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join(timeout=10)
                self._thread = None
            writers, self._loop_writers = list(self._loop_writers.values()), {}
        for writer in writers:  # their loops are done: nothing is in flight there
            writer.drop_connection()

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="group-commit", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first] if first.wanted() else []
                stop = False
                while len(batch) < self.max_batch:
                    try:
                        entry = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if entry is None:
                        stop = True
                        break
                    if entry.wanted():
                        batch.append(entry)
                if batch and not stop and self._busy(len(batch)):
                    stop = self._wait_for_more(batch)
                if batch:
                    self._thread_busy = True
                    try:
                        self.observe(batch)
                        self._commit(batch)
                    finally:
                        self._thread_busy = False
                    self.group_ended(len(batch))
                if stop:
                    return
        finally:
            self._drop_connection()

    def _busy(self, size: int) -> bool:
        """Whether a group of ``size`` should wait for more (see the module docstring):
        the last group, of the thread or a loop's writer, held more than one entry and
        ended under :data:`BUSY_WITHIN` ago."""
        return (
            self.linger > 0
            and size < self.linger_until
            and self._last_size > 1
            and time.monotonic() - self._last_end < BUSY_WITHIN
        )

    def group_ended(self, size: int) -> None:
        """A writer (the thread, or a loop's) is done with a group of ``size``."""
        self._last_end, self._last_size = time.monotonic(), size

    def quiet(self) -> bool:
        """Whether the writers are quiet: no group on the thread, and none ended in the
        last :data:`BUSY_WITHIN` (a loop's writer takes only such a service's groups)."""
        return not self._thread_busy and time.monotonic() - self._last_end >= BUSY_WITHIN

    def _wait_for_more(self, batch: list[Entry[T, R]]) -> bool:
        """Add entries arriving within the linger to ``batch``; True if told to stop."""
        deadline = time.monotonic() + self.linger
        while len(batch) < self.linger_until:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                entry = self._queue.get(timeout=remaining)
            except queue.Empty:
                return False
            if entry is None:
                return True
            if entry.wanted():
                batch.append(entry)
        return False

    def observe(self, batch: Sequence[Entry[T, R]]) -> None:
        """Tell ``observe_group`` of a transaction about to start; never stops the writer."""
        if self.observe_group is None:
            return
        try:
            self.observe_group(len(batch), time.perf_counter() - batch[0].queued)
        except Exception:  # a metric must not fail a group
            log.exception("observing a group failed")

    def _commit(self, batch: list[Entry[T, R]]) -> None:
        try:
            results = self._transaction(batch)
        except RegistryUnavailable as error:  # the outage is everyone's, not one entry's
            self._answer(batch, [None] * len(batch), [error] * len(batch))
            return
        except Exception as error:
            if len(batch) == 1:
                self._answer(batch, [None], [error])
                return
            log.info("group of %d failed (%s): each alone", len(batch), type(error).__name__)
            for entry in batch:  # isolate the entry that failed
                self.observe([entry])  # a transaction of its own
                try:
                    (result,) = self._transaction([entry])
                except Exception as single:
                    self._answer([entry], [None], [single])
                else:
                    self._answer([entry], [result], [None])
                    self._after([entry], [result])
            return
        self.count_group(len(batch))
        self._answer(batch, results, [None] * len(batch))
        self._after(batch, results)

    def _transaction(self, batch: list[Entry[T, R]]) -> list[R]:
        conn = self._connection()
        try:
            with unavailable_as_registry_error(), conn.begin():
                return self.process(conn, [entry.item for entry in batch])
        except Exception:
            if conn.invalidated or _broken(conn):
                self._drop_connection()
            raise

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.open_connection()
        return self._conn

    def open_connection(self) -> Connection:
        """A writer's own connection, set up by ``on_connect``; never handed back to the
        pool (its owner invalidates it)."""
        with unavailable_as_registry_error():
            conn = self.engine.connect().execution_options(**write_options())
            try:
                if self.on_connect is not None:
                    self.on_connect(conn)
            except BaseException:  # not set up as it must be: never used
                discard_connection(conn)
                raise
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            discard_connection(conn)

    def _answer(
        self,
        batch: list[Entry[T, R]],
        results: Sequence[R | None],
        errors: Sequence[BaseException | None],
    ) -> None:
        """Answer every caller; a loop's share of what committed goes to its hook too."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        done: dict[asyncio.AbstractEventLoop, tuple[list[T], list[R]]] = {}  # each loop's hook's
        hook = self.after_commit_on_loop
        for entry, result, error in zip(batch, results, errors, strict=True):
            if entry.future is not None:
                if error is not None:
                    entry.future.set_exception(error)
                else:
                    entry.future.set_result(result)  # type: ignore[arg-type]
            elif entry.loop is not None and entry.waiter is not None:
                by_loop.setdefault(entry.loop, []).append((entry.waiter, result, error))
                if error is None and hook is not None:
                    items, committed = done.setdefault(entry.loop, ([], []))
                    items.append(entry.item)
                    committed.append(result)  # type: ignore[arg-type]
        for loop, answers in by_loop.items():
            after = (hook, *done[loop], self._hooks) if hook is not None and loop in done else None
            try:
                loop.call_soon_threadsafe(settle_on_loop, answers, after)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                log.debug("an event loop closed before its answers arrived")
                if loop in done:  # what committed still gets the writer's hook
                    self._call_after(*done[loop])

    def _after(self, batch: list[Entry[T, R]], results: list[R]) -> None:
        """The writer's hook, for the entries no loop's hook took (see :meth:`_answer`)."""
        if self.after_commit is None:
            return
        if self.after_commit_on_loop is not None:
            pairs = [(e, r) for e, r in zip(batch, results, strict=True) if e.loop is None]
            if not pairs:
                return
            batch, results = [e for e, _ in pairs], [r for _, r in pairs]
        self._call_after([entry.item for entry in batch], results)

    def _call_after(self, items: list[T], results: list[R]) -> None:
        if self.after_commit is None:
            return
        try:
            self.after_commit(items, results)
        except Exception:  # committed and answered already: never stop the writer
            log.exception("after-commit hook failed")


def _broken(conn: Connection) -> bool:
    """Whether the driver connection under ``conn`` is closed or mid-failure."""
    try:
        driver: Any = conn.connection.driver_connection
    except Exception:
        return True
    return bool(getattr(driver, "closed", False))
