"""The group writer's at-once side, on each caller's event loop.

A coroutine's entry (:meth:`GroupCommitter.run`) no longer goes to the writer
thread first. Each event loop has a :class:`LoopWriter` with a connection of its
own: it takes every entry its loop queued since its last group and asks
``at_once.plan`` for the group's one round trip (the recorder's,
:func:`group_store.awrite_at_once`), which it then awaits on the loop, so that a
small group's write, the wait for PostgreSQL and the answers happen on the loop's
thread with no hand-over of the GIL to the writer thread and back, and no wake-up
of that thread. A group with no plan (too large, repeated keys or people, no card
numbers at hand) goes to the writer thread as it is; a plan takes what it needs
(card numbers) when it is made, so that nothing can take them before it is sent,
and returns one result per entry once the group is durable, or None (nothing
written) when PostgreSQL refused it. Those entries too go to the writer thread,
which does them as it does every group, and answers them on their loop.

One group at a time is in flight on a loop: entries queued meanwhile make the
next group. Only a quiet service's groups are written on the loop: none on the
thread, and none ended in the last few milliseconds (``GroupCommitter.quiet``);
otherwise the group goes to the thread. Written on the loop under load, groups
were smaller (the loop writes as soon as it can; the thread, waiting for the GIL,
and lingering when busy, gathers more), and at 1,000/s on two cores the machine
spent 5-8 % more CPU an application. Idle, the loop saves the two hand-overs. A
group on the loop and one on the writer thread may be in flight together, like
two workers' groups: each locks its people in ID order, so they cannot deadlock,
and the stamps (checked under the locks) keep every decision right.

Errors, as on the writer thread: :class:`RegistryUnavailable` (the outage, or a
``COMMIT`` whose fate is unknown) answers the whole group with it; anything else
the round trip raises sends the group to the writer thread, which isolates the
entry at fault. The connection is dropped after any failure (a statement that
failed leaves its transaction failed until it is rolled back: every later batch
would fail on it); the next group opens a new one (in a thread: connecting never
blocks the loop; one that opens after its group was cancelled is dropped too).
Cancelled (the loop is closing), the group's callers are cancelled too: nothing of
a cancelled round trip is known. Once its loop closed it (:meth:`aclose`), a
loop's later entries go to the writer thread (``GroupCommitter.run``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import Connection

from approval_service.errors import RegistryUnavailable
from approval_service.service.group_entries import Entry, discard_connection, settle_on_loop

if TYPE_CHECKING:
    from approval_service.service.group_commit import GroupCommitter

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class AtOnceOnLoop(Generic[T, R]):
    """What a loop's writer does with a group (the recorder's)."""

    #: the group's one round trip, ready to await on the loop's connection, with what
    #: it needs taken; None if the group may not go at once (the writer thread takes it,
    #: and only it counts it as a transaction). The round trip gives one result per
    #: entry, or None (nothing written) when PostgreSQL refused it
    plan: Callable[[Sequence[T]], Callable[[Connection], Awaitable[list[R] | None]] | None]


class LoopWriter(Generic[T, R]):
    """One event loop's side of a :class:`GroupCommitter` (see the module docstring)."""

    def __init__(self, committer: GroupCommitter[T, R], at_once: AtOnceOnLoop[T, R]) -> None:
        self._committer = committer
        self._at_once = at_once
        self._waiting: list[Entry[T, R]] = []
        self._task: asyncio.Task[None] | None = None
        self._conn: Connection | None = None

    def submit(self, entry: Entry[T, R]) -> None:
        """Queue an entry of this loop; the next group starts on the loop's next turn."""
        self._waiting.append(entry)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def aclose(self) -> None:
        """Let the group in flight finish, then drop the connection (on its loop)."""
        while self._task is not None:
            await asyncio.wait([self._task])
        self.drop_connection()

    def drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            discard_connection(conn)

    async def _drain(self) -> None:
        committer = self._committer
        try:
            while self._waiting:
                size = committer.max_batch
                batch = [entry for entry in self._waiting[:size] if entry.wanted()]
                del self._waiting[:size]
                if not batch:
                    continue
                if not committer.quiet():  # the thread makes fuller groups
                    committer.hand_over(batch)
                    continue
                try:
                    await self._group(batch)
                except Exception as error:  # a bug here: never leave a caller waiting
                    log.exception("the loop writer failed on a group")
                    self.drop_connection()
                    for entry in batch:
                        if entry.waiter is not None and not entry.waiter.done():
                            entry.waiter.set_exception(error)
        finally:
            self._task = None

    async def _group(self, batch: list[Entry[T, R]]) -> None:
        committer = self._committer
        items = [entry.item for entry in batch]
        # planned first, so that a group the loop does not write opens no connection; its
        # card numbers are taken now (lost, a gap, if connecting fails, as a refused
        # group's are), so the writer thread cannot take them before the send
        write = self._at_once.plan(items)
        if write is None:
            committer.hand_over(batch)
            return
        try:
            conn = await self._connection()
            committer.observe(batch)
            results = await write(conn)
        except RegistryUnavailable as error:  # the outage is everyone's, not one entry's
            self.drop_connection()  # it may hold a failed transaction
            settle_on_loop(_answers(batch, [None] * len(batch), error), None)
            return
        except asyncio.CancelledError:
            self.drop_connection()  # a round trip cut short: its results never read
            for entry in batch:
                if entry.waiter is not None:
                    entry.waiter.cancel()
            raise
        except Exception:
            log.info("a group on the event loop failed: the writer thread does it", exc_info=True)
            # dropped, whatever state it seems in: a statement that failed leaves the
            # transaction failed until rolled back, and every later batch would fail on it
            self.drop_connection()
            results = None
        if results is None:
            now = time.perf_counter()
            for entry in batch:
                entry.queued = now  # a second transaction: its own wait
            committer.hand_over(batch)
            return
        committer.count_group(len(batch))
        committer.group_ended(len(batch))
        after = committer.loop_hook(items, results)
        settle_on_loop(_answers(batch, results, None), after)

    async def _connection(self) -> Connection:
        if self._conn is None:
            opening = _open_in_thread(self._committer.open_connection)
            try:  # shielded: a connection that opens after its group was cancelled (the
                # loop closing) is dropped by the opening thread, loop or no loop
                self._conn = await asyncio.shield(asyncio.wrap_future(opening))
            except asyncio.CancelledError:
                opening.add_done_callback(_discard_opened)
                raise
        return self._conn


def _open_in_thread(open_connection: Callable[[], Connection]) -> Future[Connection]:
    """Open a connection on a thread of its own (connecting never blocks the loop)."""
    opening: Future[Connection] = Future()

    def run() -> None:
        opening.set_running_or_notify_cancel()
        try:
            opening.set_result(open_connection())
        except BaseException as error:
            opening.set_exception(error)

    threading.Thread(target=run, name="loop-writer-connect", daemon=True).start()
    return opening


def _discard_opened(opening: Future[Connection]) -> None:
    if opening.exception() is None:
        discard_connection(opening.result())


def _answers(
    batch: Sequence[Entry[Any, R]], results: Sequence[R | None], error: BaseException | None
) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
    answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
    for entry, result in zip(batch, results, strict=True):
        assert entry.waiter is not None  # a loop's entries are coroutines'
        answers.append((entry.waiter, result, error))
    return answers
