"""The group-commit writer: grouping, isolation of a failing entry, outages, async waiters.

A small table stands in for the decision records: ``process`` inserts each
entry's value (or raises for the values a test marks bad), so what is committed
can be read back from a real database.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, text

from approval_service.errors import RegistryUnavailable
from approval_service.service import group_commit
from approval_service.service.group_commit import GroupCommitter
from data_lookups import statement_batch
from data_lookups.database import make_engine

_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(
    request: pytest.FixtureRequest, tmp_path: Path, pg_database: Callable[[str], str]
) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'group.db'}"
    else:
        url = pg_database(f"group_{next(_databases)}")
    made = make_engine(url)
    with made.begin() as conn:
        conn.execute(text("CREATE TABLE done (value INTEGER PRIMARY KEY)"))
    yield made
    made.dispose()


class Recorder:
    """``process`` for the tests: inserts the values, raises on the bad ones."""

    def __init__(self, bad: set[int] | None = None, outage: bool = False) -> None:
        self.bad = bad or set()
        self.outage = outage
        self.groups: list[list[int]] = []
        self.after: list[tuple[list[int], list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def process(self, conn: Connection, group: Sequence[int]) -> list[int]:
        self.gate.wait(10)
        self.groups.append(list(group))
        if self.outage:
            raise RegistryUnavailable("the registry database cannot be reached; retry later")
        for value in group:
            conn.execute(text("INSERT INTO done (value) VALUES (:v)"), {"v": value})
            if value in self.bad:
                raise ValueError(f"bad value {value}")
        return [value * 10 for value in group]

    def after_commit(self, group: Sequence[int], results: Sequence[int]) -> None:
        self.after.append((list(group), list(results)))


def committed(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return {row[0] for row in conn.execute(text("SELECT value FROM done"))}


def test_concurrent_writes_share_groups_and_each_gets_its_result(engine: Engine) -> None:
    recorder = Recorder()
    recorder.gate.clear()  # hold the writer so that the queue fills up
    committer = GroupCommitter(engine, recorder.process, recorder.after_commit)
    try:
        futures = [committer.submit(v) for v in range(1, 41)]
        recorder.gate.set()
        assert [f.result(timeout=10) for f in futures] == [v * 10 for v in range(1, 41)]
    finally:
        committer.close()
    assert committed(engine) == set(range(1, 41))
    assert len(recorder.groups) < 40  # grouped: fewer transactions than entries
    assert committer.entries == 40
    assert sorted(v for group, _ in recorder.after for v in group) == list(range(1, 41))


class Held(Recorder):
    """A recorder that says when the writer has started on a group (and is held at the gate)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()

    def process(self, conn: Connection, group: Sequence[int]) -> list[int]:
        self.entered.set()
        return super().process(conn, group)


@pytest.mark.parametrize(
    ("linger", "groups"),
    [
        (0.0, [[1], [2, 3], [4], [5]]),  # no linger: each entry is written as it comes
        (30.0, [[1], [2, 3], [4, 5]]),  # busy: the small group waits until it is full
    ],
)
def test_a_busy_writer_lingers_for_a_fuller_group_and_a_quiet_one_never(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, linger: float, groups: list[list[int]]
) -> None:
    monkeypatch.setattr(group_commit, "BUSY_WITHIN", 60.0)  # "recently": this whole test
    recorder = Held()
    recorder.gate.clear()
    committer = GroupCommitter(engine, recorder.process, linger=linger, linger_until=2)
    try:
        first = committer.submit(1)  # quiet: written at once, though it is alone
        assert recorder.entered.wait(10)
        second, third = committer.submit(2), committer.submit(3)  # queue up meanwhile
        recorder.gate.set()
        assert [f.result(timeout=10) for f in (first, second, third)] == [10, 20, 30]
        # the writer's last group held two: it is busy, so entry 4 waits for company
        fourth = committer.submit(4)
        time.sleep(0.2)
        fifth = committer.submit(5)
        assert [fourth.result(timeout=10), fifth.result(timeout=10)] == [40, 50]
        assert recorder.groups == groups
        # closing ends a linger at once, and what was waiting is still written
        if linger:
            sixth = committer.submit(6)
            started = time.monotonic()
            committer.close()
            assert sixth.result(timeout=1) == 60 and time.monotonic() - started < 5
    finally:
        committer.close()
    assert committed(engine) >= {1, 2, 3, 4, 5}


def test_after_a_pause_even_a_busy_writer_writes_a_lone_entry_at_once(engine: Engine) -> None:
    """The last group held two, but it ended longer ago than BUSY_WITHIN: no waiting."""
    recorder = Held()
    recorder.gate.clear()
    committer = GroupCommitter(engine, recorder.process, linger=30.0, linger_until=2)
    try:
        first = committer.submit(1)
        assert recorder.entered.wait(10)
        second, third = committer.submit(2), committer.submit(3)
        recorder.gate.set()
        assert [f.result(timeout=10) for f in (first, second, third)] == [10, 20, 30]
        time.sleep(20 * group_commit.BUSY_WITHIN)
        assert committer.submit(4).result(timeout=5) == 40  # not the 30 s linger
        assert recorder.groups == [[1], [2, 3], [4]]
    finally:
        committer.close()


def test_a_failing_entry_fails_alone_and_leaves_no_row(engine: Engine) -> None:
    recorder = Recorder(bad={7})
    recorder.gate.clear()
    committer = GroupCommitter(engine, recorder.process)
    try:
        futures = {v: committer.submit(v) for v in range(1, 11)}
        recorder.gate.set()
        for value, future in futures.items():
            if value == 7:
                with pytest.raises(ValueError, match="bad value 7"):
                    future.result(timeout=10)
            else:
                assert future.result(timeout=10) == value * 10
    finally:
        committer.close()
    assert committed(engine) == set(range(1, 11)) - {7}


def test_an_outage_fails_the_whole_group_without_retrying_each(engine: Engine) -> None:
    recorder = Recorder(outage=True)
    recorder.gate.clear()
    committer = GroupCommitter(engine, recorder.process)
    try:
        futures = [committer.submit(v) for v in range(5)]
        recorder.gate.set()
        for future in futures:
            with pytest.raises(RegistryUnavailable):
                future.result(timeout=10)
    finally:
        committer.close()
    assert sum(len(g) for g in recorder.groups) == 5  # each entry tried once, not again alone
    assert committed(engine) == set()


def test_coroutines_wait_without_blocking_the_loop_and_cancelled_ones_are_skipped(
    engine: Engine,
) -> None:
    recorder = Recorder()
    committer = GroupCommitter(engine, recorder.process)

    async def main() -> list[int]:
        recorder.gate.clear()
        first = asyncio.ensure_future(committer.run(1))
        await asyncio.sleep(0.05)  # the writer holds entry 1 at the gate
        abandoned = asyncio.ensure_future(committer.run(2))
        await asyncio.sleep(0)
        abandoned.cancel()  # its caller went away before the writer took it
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while not first.done():
                ticks += 1
                await asyncio.sleep(0.001)

        ticking = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.05)
        recorder.gate.set()
        results = [await first, *await asyncio.gather(*(committer.run(v) for v in (3, 4, 5)))]
        await ticking
        assert ticks > 5  # the loop kept running while entry 1 waited for its commit
        return results

    try:
        assert asyncio.run(main()) == [10, 30, 40, 50]
    finally:
        committer.close()
    assert committed(engine) == {1, 3, 4, 5}


def test_a_failing_after_commit_hook_does_not_stop_the_writer(engine: Engine) -> None:
    def explode(group: Sequence[int], results: Sequence[int]) -> None:
        raise RuntimeError("hook failed")

    committer = GroupCommitter(engine, Recorder().process, explode)
    try:
        assert committer.write(1) == 10
        assert committer.write(2) == 20
    finally:
        committer.close()
    assert committed(engine) == {1, 2}


def test_the_loop_hook_gets_its_loops_committed_entries_on_that_loop(engine: Engine) -> None:
    """Coroutines' entries go to the on-loop hook, run on their own loop (not the writer's
    thread) after they were answered; threads' entries still go to the writer's hook;
    an entry that failed goes to neither."""
    recorder = Recorder(bad={3})
    on_loop: list[tuple[list[int], list[int], bool, bool]] = []
    seen: dict[str, Any] = {}

    async def hook(group: Sequence[int], results: Sequence[int]) -> None:
        answered = all(seen["waiters"][value - 1].done() for value in group)
        on_its_loop = threading.get_ident() == seen["loop_thread"]
        on_loop.append((list(group), list(results), on_its_loop, answered))

    committer = GroupCommitter(
        engine, recorder.process, recorder.after_commit, after_commit_on_loop=hook
    )

    async def main() -> list[int | str]:
        seen["loop_thread"] = threading.get_ident()
        waiters = seen["waiters"] = [asyncio.ensure_future(committer.run(v)) for v in (1, 2, 3)]
        done = await asyncio.gather(*waiters, return_exceptions=True)
        for _ in range(5):  # the hook starts after the answers: let it run
            await asyncio.sleep(0)
        return [d if isinstance(d, int) else type(d).__name__ for d in done]

    try:
        assert asyncio.run(main()) == [10, 20, "ValueError"]
        assert committer.write(4) == 40  # a thread's entry: the writer's hook
    finally:
        committer.close()
    assert sorted(v for group, _, _, _ in on_loop for v in group) == [1, 2]
    assert sorted(r for _, results, _, _ in on_loop for r in results) == [10, 20]
    assert all(on_its_loop and answered for _, _, on_its_loop, answered in on_loop)
    assert recorder.after == [([4], [40])]
    assert committed(engine) == {1, 2, 4}


def test_a_failing_loop_hook_is_logged_and_the_loop_goes_on(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode(group: Sequence[int], results: Sequence[int]) -> None:
        raise RuntimeError("hook failed")

    committer = GroupCommitter(engine, Recorder().process, after_commit_on_loop=explode)

    async def main() -> list[int]:
        first = await committer.run(1)
        for _ in range(5):
            await asyncio.sleep(0)
        return [first, await committer.run(2)]

    try:
        assert asyncio.run(main()) == [10, 20]
    finally:
        committer.close()
    assert committed(engine) == {1, 2}
    assert "after-commit hook on the event loop failed" in caplog.text


def test_draining_waits_for_a_slow_hook_and_a_given_up_callers_entry_reaches_it(
    engine: Engine,
) -> None:
    """A caller that gave up after the writer took its entry: the entry still committed,
    so the hook gets it; ``drain_loop_hooks`` returns only once the hook has finished."""
    recorder = Held()
    recorder.gate.clear()
    finished: list[list[int]] = []

    async def slow(group: Sequence[int], results: Sequence[int]) -> None:
        await asyncio.sleep(0.05)
        finished.append(list(group))

    committer = GroupCommitter(engine, recorder.process, after_commit_on_loop=slow)

    async def main() -> list[list[int]]:
        waiter = asyncio.ensure_future(committer.run(1))
        while not recorder.entered.is_set():  # the writer holds the entry
            await asyncio.sleep(0.01)
        waiter.cancel()
        recorder.gate.set()
        while not committer.entries:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)  # the answers' callback ran: the hook is running
        await committer.drain_loop_hooks()
        return list(finished)

    try:
        assert asyncio.run(main()) == [[1]]
    finally:
        committer.close()
    assert committed(engine) == {1}


def test_entries_of_a_loop_that_closed_get_the_writers_hook(engine: Engine) -> None:
    recorder = Held()
    recorder.gate.clear()
    on_loop: list[list[int]] = []

    async def hook(group: Sequence[int], results: Sequence[int]) -> None:
        on_loop.append(list(group))

    committer = GroupCommitter(
        engine, recorder.process, recorder.after_commit, after_commit_on_loop=hook
    )

    async def submit_and_leave() -> None:
        waiter = asyncio.ensure_future(committer.run(7))
        while not recorder.entered.is_set():
            await asyncio.sleep(0.01)
        waiter.cancel()

    try:
        asyncio.run(submit_and_leave())  # its loop is closed when this returns
        recorder.gate.set()
        assert committer.write(8) == 80  # after the group of 7 is done
    finally:
        committer.close()
    assert on_loop == []
    assert recorder.after == [([7], [70]), ([8], [80])]


def test_the_writer_reconnects_after_its_connection_is_killed(
    pg_database: Callable[[str], str],
) -> None:
    url = pg_database("group_reconnect")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE done (value INTEGER PRIMARY KEY)"))
    committer = GroupCommitter(engine, Recorder().process)
    try:
        assert committer.write(1) == 10
        with psycopg.connect(url, autocommit=True) as admin:  # kill the writer's backend
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(RegistryUnavailable):
            committer.write(2)  # the group on the dead connection fails as an outage
        assert committer.write(3) == 30  # and the next one opens a new connection
    finally:
        committer.close()
        engine.dispose()
    assert committed(engine) == {1, 3}


def test_the_writer_drops_a_connection_a_statement_batch_left_midway(
    pg_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fails while its results are still out (here: memory runs out while
    reading them) closes its connection: that group fails as an outage (the rollback
    finds the connection closed), the writer drops the connection, and the next group
    goes on a new one instead of failing on a connection psycopg can no longer use."""
    url = pg_database("group_batch_midway")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE done (value INTEGER PRIMARY KEY)"))
    real_read = statement_batch._read_to_sync
    failures = iter([True])

    def read(pgconn: Any) -> Any:
        if next(failures, False):
            raise MemoryError("out of memory reading the results")
        return real_read(pgconn)

    def process(conn: Connection, group: Sequence[int]) -> list[int]:
        batch = statement_batch.StatementBatch(conn.connection.driver_connection)  # type: ignore[arg-type]
        batch.add_many("INSERT INTO done (value) VALUES (%s)", [(v,) for v in group])
        batch.run()
        return [v * 10 for v in group]

    monkeypatch.setattr(statement_batch, "_read_to_sync", read)
    committer = GroupCommitter(engine, process)
    try:
        with pytest.raises(RegistryUnavailable) as failed:
            committer.write(1)
        chain, error = [], failed.value.__cause__
        while error is not None:  # what went wrong first stays in the chain
            chain.append(type(error))
            error = error.__cause__ or error.__context__
        assert MemoryError in chain
        assert committer.write(2) == 20
        assert committer.write(3) == 30
    finally:
        committer.close()
        engine.dispose()
    assert committed(engine) == {2, 3}


def test_many_threads_and_coroutines_together_lose_nothing(engine: Engine) -> None:
    recorder = Recorder()
    committer = GroupCommitter(engine, recorder.process)

    async def coroutines() -> list[int]:
        return list(await asyncio.gather(*(committer.run(v) for v in range(1000, 1100))))

    try:
        with ThreadPoolExecutor(8) as pool:
            threads = list(pool.map(committer.write, range(1, 101)))
            from_loop = asyncio.run(coroutines())
    finally:
        committer.close()
    assert threads == [v * 10 for v in range(1, 101)]
    assert from_loop == [v * 10 for v in range(1000, 1100)]
    assert committed(engine) == set(range(1, 101)) | set(range(1000, 1100))
