"""Grouped commits: many decision records in one transaction, none answered before it is durable.

Request threads hand their rows to one writer thread and wait. The writer takes
everything queued (up to ``max_batch``), inserts it with one ``executemany`` per
table inside one transaction, commits, and only then releases the waiting
requests. Under load one commit (one WAL flush) serves many decisions; with
a single request in flight it costs what a plain transaction costs.

When a batch fails (a repeated ``Idempotency-Key`` racing its twin), the writer
retries the batch one entry per transaction, so only the offending request sees
the error; nothing is half-written.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Table, insert

from data_lookups.database import write_transaction

log = logging.getLogger(__name__)

Rows = Sequence[tuple[Table, dict[str, Any]]]


@dataclass
class _Entry:
    rows: Rows
    done: Future[None] = field(default_factory=Future)


class GroupCommitter:
    def __init__(self, engine: Engine, max_batch: int = 256) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Entry | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.entries = 0

    def write(self, rows: Rows) -> None:
        """Insert the rows durably (returns after the commit), or raise what the insert raised."""
        self._ensure_started()
        entry = _Entry(rows)
        self._queue.put(entry)
        entry.done.result()

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
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    stop = True
                    break
                batch.append(entry)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Entry]) -> None:
        try:
            self._insert(batch)
        except Exception as error:
            if len(batch) == 1:
                batch[0].done.set_exception(error)
                return
            for entry in batch:  # isolate the entry that failed
                try:
                    self._insert([entry])
                except Exception as single:
                    entry.done.set_exception(single)
                else:
                    entry.done.set_result(None)
            return
        self.batches += 1
        self.entries += len(batch)
        for entry in batch:
            entry.done.set_result(None)

    def _insert(self, batch: list[_Entry]) -> None:
        by_table: dict[Table, list[dict[str, Any]]] = {}
        for entry in batch:
            for table, row in entry.rows:
                by_table.setdefault(table, []).append(row)
        with write_transaction(self.engine) as conn:
            for table, rows in by_table.items():
                conn.execute(insert(table), rows)
