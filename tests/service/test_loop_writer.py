"""The group writer on the event loop: small groups written at once there, the rest
handed to the writer thread, outages and failures as the thread has them.

``at_once`` here writes a group's values in one statement batch awaited on the loop
(as the recorder's ``awrite_at_once`` does), or declines (None) a group holding a
value the test marks for the long way; ``process`` is the writer thread's.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from approval_service.errors import RegistryUnavailable
from approval_service.service import group_commit
from approval_service.service.group_commit import GroupCommitter
from approval_service.service.loop_writer import AtOnceOnLoop
from data_lookups.database import make_engine
from data_lookups.statement_batch import StatementBatch

_databases = itertools.count()
INSERT = "INSERT INTO done (value) VALUES (%s)"


@pytest.fixture
def engine(pg_database: Callable[[str], str]) -> Iterator[Engine]:
    made = make_engine(pg_database(f"loop_writer_{next(_databases)}"))
    with made.begin() as conn:
        conn.execute(text("CREATE TABLE done (value INTEGER PRIMARY KEY)"))
    yield made
    made.dispose()


def committed(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT value FROM done")).scalars())


class Writers:
    """Both sides' work, and who did what: ``long`` values make the loop decline their
    group, ``outage`` and ``bad`` ones make it raise."""

    def __init__(
        self, long: set[int] = frozenset(), refused: set[int] = frozenset(), **raises: set[int]
    ) -> None:  # type: ignore[assignment]
        self.long = set(long)
        self.refused = set(refused)
        self.outage = raises.get("outage", set())
        self.bad = raises.get("bad", set())
        self.on_loop: list[list[int]] = []
        self.on_thread: list[list[int]] = []
        self.threads: set[str] = set()
        self.connections: list[Connection] = []
        self.hooked: list[list[int]] = []
        self.observed: list[int] = []  # the size of each transaction begun
        self.gate = asyncio.Event()
        self.gate.set()

    def plan(
        self, group: Sequence[int]
    ) -> Callable[[Connection], Awaitable[list[int] | None]] | None:
        if self.long & set(group):
            return None
        return lambda conn: self.at_once(conn, group)

    async def at_once(self, conn: Connection, group: Sequence[int]) -> list[int] | None:
        self.on_loop.append(list(group))
        self.connections.append(conn)
        self.threads.add(threading.current_thread().name)
        await self.gate.wait()
        if self.refused & set(group):
            return None
        if self.outage & set(group):
            conn.connection.driver_connection.close()  # type: ignore[union-attr]
            raise RegistryUnavailable("the registry database is unreachable")
        if self.bad & set(group):  # fails midway: the transaction holds the values' keys
            batch = StatementBatch(conn.connection.driver_connection)  # type: ignore[arg-type]
            batch.add("BEGIN", prepare=False)
            batch.add_many(INSERT, [(v,) for v in group])
            batch.add("SELECT 1 / %s", (0,))
            await batch.arun()
        batch = StatementBatch(conn.connection.driver_connection)  # type: ignore[arg-type]
        batch.add_many(INSERT, [(v,) for v in group])
        batch.add("COMMIT", prepare=False)
        await batch.arun()
        return [v * 10 for v in group]

    def process(self, conn: Connection, group: Sequence[int]) -> list[int]:
        self.on_thread.append(list(group))
        self.threads.add(threading.current_thread().name)
        conn.execute(text("INSERT INTO done (value) VALUES (:v)"), [{"v": v} for v in group])
        return [v * 100 for v in group]

    async def hook(self, items: Sequence[int], results: Sequence[int]) -> None:
        self.hooked.append(list(items))


def committer_for(engine: Engine, writers: Writers, **options: Any) -> GroupCommitter[int, int]:
    return GroupCommitter(
        engine,
        writers.process,
        after_commit_on_loop=writers.hook,
        at_once_on_loop=AtOnceOnLoop(writers.plan),
        observe_group=lambda size, waited: writers.observed.append(size),
        **options,
    )


def on_one_loop(committer: GroupCommitter[int, int], values: Sequence[int]) -> list[Any]:
    """Every value's result (or error) from coroutines on one loop, closed as a worker's."""

    async def main() -> list[Any]:
        try:
            return await asyncio.gather(*(committer.run(v) for v in values), return_exceptions=True)
        finally:
            await committer.aclose_loop()
            await committer.drain_loop_hooks()

    return asyncio.run(main())


def test_a_small_group_is_written_and_answered_on_the_loop(engine: Engine) -> None:
    writers = Writers()
    committer = committer_for(engine, writers)
    try:
        assert on_one_loop(committer, [1, 2, 3]) == [10, 20, 30]
        assert writers.on_loop == [[1, 2, 3]]  # queued on one turn: one group
        assert writers.on_thread == [] and writers.threads == {"MainThread"}
        assert writers.hooked == [[1, 2, 3]]  # the loop's hook, after the commit
        assert (committer.batches, committer.entries) == (1, 3)
        assert committed(engine) == {1, 2, 3}
        assert writers.connections[0].closed  # dropped when its loop closed
    finally:
        committer.close()


@pytest.mark.parametrize(
    ("case", "tried_on_loop", "transactions"),
    [
        pytest.param({"long": {2}}, [], [3], id="not accepted: straight to the thread"),
        pytest.param({"refused": {2}}, [[1, 2, 3]], [3, 3], id="refused: then the thread"),
    ],
)
def test_what_the_loop_declines_the_writer_thread_does(
    engine: Engine,
    case: dict[str, set[int]],
    tried_on_loop: list[list[int]],
    transactions: list[int],
) -> None:
    writers = Writers(**case)
    committer = committer_for(engine, writers)
    try:
        assert on_one_loop(committer, [1, 2, 3]) == [100, 200, 300]
        assert writers.on_loop == tried_on_loop and writers.on_thread == [[1, 2, 3]]
        assert "group-commit" in writers.threads
        assert writers.observed == transactions  # a group counted once per transaction
        assert writers.hooked == [[1, 2, 3]]  # the thread's group, hooked on its loop
        assert committed(engine) == {1, 2, 3}
    finally:
        committer.close()


def test_entries_queued_while_a_group_is_in_flight_go_to_the_thread(engine: Engine) -> None:
    """Right after a group the service is not quiet: what queued meanwhile goes to the
    writer thread, as one group (the loop writes only a quiet service's groups)."""
    writers = Writers()
    committer = committer_for(engine, writers)

    async def main() -> list[int]:
        writers.gate.clear()
        first = asyncio.ensure_future(committer.run(1))
        while not writers.on_loop:  # the first group is in flight, held at the gate
            await asyncio.sleep(0)
        later = [asyncio.ensure_future(committer.run(v)) for v in (2, 3, 4)]
        await asyncio.sleep(0.01)
        writers.gate.set()
        try:
            return list(await asyncio.gather(first, *later))
        finally:
            await committer.aclose_loop()

    try:
        assert asyncio.run(main()) == [10, 200, 300, 400]
        assert writers.on_loop == [[1]] and writers.on_thread == [[2, 3, 4]]
    finally:
        committer.close()


def test_once_quiet_again_the_loop_writes_the_next_group(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_commit, "BUSY_WITHIN", 0.05)
    writers = Writers()
    committer = committer_for(engine, writers)

    async def main() -> list[int]:
        try:
            first = await committer.run(1)
            await asyncio.sleep(0.1)  # twice BUSY_WITHIN
            return [first, await committer.run(2)]
        finally:
            await committer.aclose_loop()

    try:
        assert asyncio.run(main()) == [10, 20]
        assert writers.on_loop == [[1], [2]] and writers.on_thread == []
        assert len({id(c) for c in writers.connections}) == 1  # the loop's own connection
    finally:
        committer.close()


def test_when_the_writer_is_busy_the_thread_takes_the_group_and_lingers(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a group of two, a small group would wait for more: the loop hands it to the
    thread, which lingers for a fuller group (the loop writes only the quiet service's)."""
    monkeypatch.setattr(group_commit, "BUSY_WITHIN", 60.0)  # "recently": this whole test
    writers = Writers()
    committer = committer_for(engine, writers, linger=5.0, linger_until=4)

    async def main() -> list[int]:
        try:
            first = list(await asyncio.gather(committer.run(1), committer.run(2)))
            third = asyncio.ensure_future(committer.run(3))
            await asyncio.sleep(0.05)
            assert writers.on_thread == [] and not third.done()  # the thread waits for more
            rest = [asyncio.ensure_future(committer.run(v)) for v in (4, 5, 6)]
            return first + list(await asyncio.wait_for(asyncio.gather(third, *rest), 2.0))
        finally:
            await committer.aclose_loop()

    try:
        assert asyncio.run(main()) == [10, 20, 300, 400, 500, 600]
        assert writers.on_loop == [[1, 2]]
        assert writers.on_thread == [[3, 4, 5, 6]]  # went once full, not after 5 s
    finally:
        committer.close()


def test_an_outage_answers_the_whole_group_and_the_next_gets_a_new_connection(
    engine: Engine,
) -> None:
    writers = Writers(outage={2})
    committer = committer_for(engine, writers)

    async def main() -> tuple[list[Any], list[int]]:
        try:
            failed = await asyncio.gather(
                *(committer.run(v) for v in (1, 2)), return_exceptions=True
            )
            return failed, list(await asyncio.gather(committer.run(5)))
        finally:
            await committer.aclose_loop()

    try:
        failed, after = asyncio.run(main())
        assert [type(e) for e in failed] == [RegistryUnavailable, RegistryUnavailable]
        assert writers.on_thread == []  # an outage is not retried entry by entry
        assert after == [50] and committed(engine) == {5}
        first, second = writers.connections
        assert first.closed and first is not second
    finally:
        committer.close()


def test_a_group_that_fails_on_the_loop_is_done_by_the_writer_thread(engine: Engine) -> None:
    """Its transaction failed midway and stays failed until rolled back: the connection
    is dropped, so the loop's next group goes on a new one, not on a dead transaction."""
    writers = Writers(bad={2})
    committer = committer_for(engine, writers)

    async def main() -> list[Any]:
        try:
            first = await asyncio.gather(committer.run(1), committer.run(2))
            await asyncio.sleep(0.05)  # quiet again (BUSY_WITHIN is 5 ms)
            return [*first, await committer.run(7)]
        finally:
            await committer.aclose_loop()

    try:
        assert asyncio.run(main()) == [100, 200, 70]
        assert writers.on_thread == [[1, 2]] and committed(engine) == {1, 2, 7}
        first, second = writers.connections[0], writers.connections[-1]
        assert first is not second and first.closed
    finally:
        committer.close()


def test_a_caller_that_gave_up_is_not_written(engine: Engine) -> None:
    writers = Writers()
    committer = committer_for(engine, writers)

    async def main() -> int:
        gone = asyncio.ensure_future(committer.run(1))
        kept = asyncio.ensure_future(committer.run(2))
        gone.cancel()
        try:
            return await kept
        finally:
            await committer.aclose_loop()

    try:
        assert asyncio.run(main()) == 20
        assert writers.on_loop == [[2]] and committed(engine) == {2}
    finally:
        committer.close()


def test_closing_drops_the_connections_of_loops_that_did_not_close_theirs(
    engine: Engine,
) -> None:
    writers = Writers()
    committer = committer_for(engine, writers)
    assert asyncio.run(committer.run(7)) == 70  # the loop ends without aclose_loop
    (conn,) = writers.connections
    assert not conn.closed
    committer.close()
    assert conn.closed


def test_after_its_loop_closed_the_writer_its_entries_go_to_the_thread(engine: Engine) -> None:
    """A late entry (a request answered while the worker shuts down) is still written,
    by the thread, and opens no loop connection that nothing would close."""
    writers = Writers()
    committer = committer_for(engine, writers)

    async def main() -> list[int]:
        first = await committer.run(1)
        await committer.aclose_loop()
        await asyncio.sleep(0.05)  # quiet again (BUSY_WITHIN is 5 ms)
        return [first, await committer.run(2)]

    try:
        assert asyncio.run(main()) == [10, 200]
        assert writers.on_loop == [[1]] and writers.on_thread == [[2]]
        (conn,) = writers.connections
        assert conn.closed  # the loop's, closed by aclose_loop and not opened again
        assert committed(engine) == {1, 2}
    finally:
        committer.close()


def test_a_connection_that_opens_after_its_loop_closed_is_dropped(engine: Engine) -> None:
    writers = Writers()
    committer = committer_for(engine, writers)
    opening, release = threading.Event(), threading.Event()
    opened: list[Connection] = []
    open_connection = committer.open_connection

    def slow_open() -> Connection:
        opening.set()
        release.wait(5)
        conn = open_connection()
        opened.append(conn)
        return conn

    committer.open_connection = slow_open  # type: ignore[method-assign]

    async def main() -> None:
        running = asyncio.ensure_future(committer.run(1))
        while not opening.is_set():
            await asyncio.sleep(0.001)
        assert not running.done()  # its group waits for the connection
        # returning closes the loop: its writer's group is cancelled while connecting

    try:
        asyncio.run(main())
        release.set()
        for _ in range(500):
            if opened and opened[0].closed:
                break
            threading.Event().wait(0.01)
        assert opened and opened[0].closed  # dropped, not left open for nobody
        assert writers.on_loop == [] and committed(engine) == set()
    finally:
        committer.close()
