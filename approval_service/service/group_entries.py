"""What the group writers share: an entry handed to them, and answering on an event loop.

An :class:`Entry` is one caller's work, waited for by a thread (a
:class:`~concurrent.futures.Future`) or by a coroutine (an asyncio future on its
loop). The writer thread (:mod:`group_commit`) answers a loop's coroutines with
:func:`settle_on_loop`, called there by ``call_soon_threadsafe``; the writer on the
loop itself (:mod:`loop_writer`) calls it directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: runs on a caller's event loop after its answers, with that loop's entries
AfterCommitOnLoop = Callable[[Sequence[T], Sequence[R]], Awaitable[None]]
#: a hook to start on the loop after its answers: (hook, items, results, running tasks)
After = tuple[AfterCommitOnLoop[Any, Any], list[Any], list[Any], set[asyncio.Task[None]]]


@dataclass
class Entry(Generic[T, R]):
    item: T
    queued: float  # time.perf_counter() when it was handed to a writer
    future: Future[R] | None = None  # a thread waits on it
    loop: asyncio.AbstractEventLoop | None = None  # or a coroutine on this loop
    waiter: asyncio.Future[R] | None = None

    def wanted(self) -> bool:
        """False when the caller gave up before the writer started on it."""
        if self.future is not None:
            return self.future.set_running_or_notify_cancel()
        return self.waiter is not None and not self.waiter.cancelled()


def settle_on_loop(
    answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
    after: After | None,
) -> None:
    """On the waiters' loop: give each its result or error, then start the hook."""
    for waiter, result, error in answers:
        if waiter.cancelled():
            continue
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(result)
    if after is not None:
        hook, items, results, running = after
        task = asyncio.ensure_future(_run_hook(hook, items, results))
        running.add(task)  # referenced until done: a task nobody holds may vanish
        task.add_done_callback(running.discard)


async def _run_hook(
    hook: AfterCommitOnLoop[Any, Any], items: list[Any], results: list[Any]
) -> None:
    try:
        await hook(items, results)
    except Exception:  # committed and answered already: nothing to undo
        log.exception("after-commit hook on the event loop failed")


def discard_connection(conn: Connection) -> None:
    """Invalidate and close a writer's connection: never handed back to the pool, so no
    pooled caller inherits the writer's session settings (``on_connect``)."""
    try:
        conn.invalidate()
        conn.close()
    except Exception:  # already broken: nothing more to free
        log.debug("dropping a writer's connection failed", exc_info=True)
