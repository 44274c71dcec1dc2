"""Grouped commits: many applications in one transaction, none answered before it is durable.

Callers (request threads, or the event loop through :func:`asyncio.wrap_future`)
hand their work to one writer thread and wait on a future. The writer takes
everything queued (up to ``max_batch``), opens one write transaction, lets the
``process`` function do the whole group on that connection (lock, check, issue,
insert), commits, and only then resolves the futures. Under load one commit (one
WAL flush, one set of round trips) serves many applications; with a single
request in flight it costs what a plain transaction costs.

When a group fails (a repeated ``Idempotency-Key`` racing its twin, a registry
constraint, a deadlock), its transaction is rolled back whole and the writer
runs every entry again alone, one transaction each, so only the entry at fault
sees the error; nothing is half-written.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy import Connection, Engine

from data_lookups.database import write_transaction

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: does a group of entries on a connection in a write transaction; one result per entry
Process = Callable[[Connection, Sequence[T]], list[R]]
#: runs in the writer after a group committed and its callers were answered
AfterCommit = Callable[[Sequence[T], Sequence[R]], None]


@dataclass
class _Entry(Generic[T, R]):
    item: T
    done: Future[R] = field(default_factory=Future)


class GroupCommitter(Generic[T, R]):
    def __init__(
        self,
        engine: Engine,
        process: Process[T, R],
        after_commit: AfterCommit[T, R] | None = None,
        max_batch: int = 256,
    ) -> None:
        self.engine = engine
        self.process = process
        self.after_commit = after_commit
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Entry[T, R] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.entries = 0

    def submit(self, item: T) -> Future[R]:
        """Queue one entry; the future resolves after its group committed (or fails)."""
        self._ensure_started()
        entry: _Entry[T, R] = _Entry(item)
        self._queue.put(entry)
        return entry.done

    def write(self, item: T) -> R:
        """Do one entry durably and return its result, or raise what doing it raised."""
        return self.submit(item).result()

    def close(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join(timeout=10)
                self._thread = None

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="group-commit", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first] if first.done.set_running_or_notify_cancel() else []
            stop = False
            while len(batch) < self.max_batch:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    stop = True
                    break
                if entry.done.set_running_or_notify_cancel():  # not abandoned by its caller
                    batch.append(entry)
            if batch:
                self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Entry[T, R]]) -> None:
        try:
            results = self._transaction(batch)
        except Exception as error:
            if len(batch) == 1:
                batch[0].done.set_exception(error)
                return
            log.info(
                "a group of %d failed (%s); doing each alone", len(batch), type(error).__name__
            )
            for entry in batch:  # isolate the entry that failed
                try:
                    (result,) = self._transaction([entry])
                except Exception as single:
                    entry.done.set_exception(single)
                else:
                    entry.done.set_result(result)
                    self._after([entry], [result])
            return
        self.batches += 1
        self.entries += len(batch)
        for entry, result in zip(batch, results, strict=True):
            entry.done.set_result(result)
        self._after(batch, results)

    def _after(self, batch: list[_Entry[T, R]], results: list[R]) -> None:
        if self.after_commit is None:
            return
        try:
            self.after_commit([entry.item for entry in batch], results)
        except Exception:  # committed and answered already: never stop the writer
            log.exception("after-commit hook failed")

    def _transaction(self, batch: list[_Entry[T, R]]) -> list[R]:
        with write_transaction(self.engine) as conn:
            return self.process(conn, [entry.item for entry in batch])
