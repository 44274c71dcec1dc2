"""A statement batch: psycopg's placeholders and adapters, one round trip, the first
refusal raised, statements prepared once per connection and kept across rollbacks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from data_lookups.statement_batch import StatementBatch, converted
from tests.service.pg_groups import client_turns

Driver = psycopg.Connection[Any]


@pytest.mark.parametrize(
    ("sql", "query", "wanted"),
    [
        ("SELECT %s, %s", b"SELECT $1, $2", 2),
        ("SELECT %(a)s, %(b)s, %(a)s", b"SELECT $1, $2, $1", ("a", "b")),
        ("SELECT 100 %% 7 + %s", b"SELECT 100 % 7 + $1", 1),
        ("COMMIT", b"COMMIT", 0),
    ],
)
def test_placeholders_become_numbered_parameters(sql: str, query: bytes, wanted: Any) -> None:
    assert converted(sql) == (query, wanted)


def test_mixed_placeholders_are_refused() -> None:
    with pytest.raises(ValueError, match="mixes"):
        converted("SELECT %s, %(a)s")


@pytest.fixture
def driver(pg_url: str) -> Iterator[Driver]:
    """A connection on which psycopg prepares nothing (as make_engine's), with a table."""
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("DROP TABLE IF EXISTS batch_t")
        admin.execute("CREATE TABLE batch_t (id text PRIMARY KEY, d date, m numeric, j json)")
        with psycopg.connect(pg_url, autocommit=True, prepare_threshold=None) as conn:
            yield conn
        admin.execute("DROP TABLE IF EXISTS batch_t")


INSERT = "INSERT INTO batch_t (id, d, m, j) VALUES (%s, %s, %s, %s::json)"


def rows(driver: Driver) -> list[tuple[Any, ...]]:
    return driver.execute("SELECT id, d, m, j::text FROM batch_t ORDER BY id").fetchall()


@contextmanager
def traced(driver: Driver, trace: Path) -> Iterator[None]:
    """libpq's protocol trace of the block, in ``trace`` once the block is left."""
    with trace.open("w") as out:
        driver.pgconn.trace(out.fileno())
        driver.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield
        finally:
            driver.pgconn.untrace()


def prepared(driver: Driver) -> list[str]:
    sql = "SELECT statement FROM pg_prepared_statements WHERE name LIKE 'miaopi_b%%'"
    return sorted(r[0] for r in driver.execute(sql))


def run_via(via: str, batch: StatementBatch) -> None:
    """``run`` (waiting in this thread), or ``arun`` awaited on an event loop."""
    if via == "loop":
        asyncio.run(batch.arun())
    else:
        batch.run()


VIAS = ["thread", "loop"]


@pytest.mark.parametrize("via", VIAS)
def test_a_transaction_goes_in_one_round_trip_with_values_adapted(
    driver: Driver, tmp_path: Path, via: str
) -> None:
    batch = StatementBatch(driver)
    batch.add("BEGIN", prepare=False)
    batch.add_many(
        INSERT, [(f"r{i}", date(2026, 12, 1), Decimal("1.10"), '{"p": "100%"}') for i in range(3)]
    )
    batch.add("COMMIT", prepare=False)
    assert len(batch) == 5
    trace = tmp_path / "libpq.trace"
    with traced(driver, trace):
        run_via(via, batch)
    assert client_turns(trace) == 1
    assert rows(driver) == [
        (f"r{i}", date(2026, 12, 1), Decimal("1.10"), '{"p": "100%"}') for i in range(3)
    ]
    assert len(batch) == 0  # a batch runs its statements once
    assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_statement_is_parsed_once_per_connection(driver: Driver, tmp_path: Path) -> None:
    for i in range(2):
        batch = StatementBatch(driver)
        batch.add(INSERT, (f"p{i}", None, None, None))
        trace = tmp_path / f"{i}.trace"
        with traced(driver, trace):
            batch.run()
        parses = trace.read_text().count("\tParse\t")
        assert parses == (1 if i == 0 else 0)
    assert prepared(driver) == ["INSERT INTO batch_t (id, d, m, j) VALUES ($1, $2, $3, $4::json)"]


def test_where_psycopg_prepares_the_batch_does_not(pg_url: str) -> None:
    """psycopg's rollback would deallocate them: see the module's docstring."""
    with psycopg.connect(pg_url, autocommit=True) as conn:  # prepare_threshold 5
        batch = StatementBatch(conn)
        batch.add("SELECT %s::int + 1", (41,))
        batch.run()
        assert prepared(conn) == []


@pytest.mark.parametrize("via", VIAS)
def test_the_first_refusal_is_raised_and_what_follows_is_skipped(driver: Driver, via: str) -> None:
    first = StatementBatch(driver)
    first.add(INSERT, ("taken", None, None, None))
    first.run()
    batch = StatementBatch(driver)
    batch.add("BEGIN", prepare=False)
    batch.add(INSERT, ("new", None, None, None))
    batch.add(INSERT, ("taken", None, None, None))  # refused: the key is used
    batch.add("SELECT 1 / %s", (0,))  # would fail too, but is skipped: never parsed
    batch.add("COMMIT", prepare=False)
    with pytest.raises(psycopg.errors.UniqueViolation) as refused:
        run_via(via, batch)
    assert isinstance(refused.value, psycopg.IntegrityError)
    assert refused.value.diag.constraint_name == "batch_t_pkey"
    assert driver.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    driver.rollback()
    assert rows(driver) == [("taken", None, None, None)]
    # prepared statements outlive the rollback, and the skipped one was not taken as
    # prepared: both run in the next batch
    again = StatementBatch(driver)
    again.add(INSERT, ("after", None, None, None))
    again.add("SELECT 1 / %s", (1,))
    run_via(via, again)
    assert [r[0] for r in rows(driver)] == ["after", "taken"]


def test_a_refusal_read_while_sending_is_raised_once_and_logs_nothing(
    driver: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    """psycopg's own pipeline logged "error ignored terminating" when a refusal was read
    while it still sent: a warning a refused group in the service's log."""
    batch = StatementBatch(driver)
    batch.add("BEGIN", prepare=False)
    batch.add("SELECT 1 / %s", (0,))
    batch.add_many(INSERT, [(f"late{i}", None, None, '"' + "z" * 2000 + '"') for i in range(2000)])
    batch.add("COMMIT", prepare=False)
    with caplog.at_level("DEBUG", logger="psycopg"), pytest.raises(psycopg.errors.DivisionByZero):
        batch.run()
    assert caplog.records == []
    driver.rollback()
    assert rows(driver) == []


def test_rows_are_loaded_by_psycopg_and_only_from_a_batch_that_ran(driver: Driver) -> None:
    batch = StatementBatch(driver)
    none = batch.add("SELECT 1 WHERE false")
    some = batch.add("SELECT %s::int, %s::text, '{\"a\": [1]}'::json", (7, "seven"))
    with pytest.raises(psycopg.errors.PipelineAborted):
        batch.rows(some)
    batch.run()
    assert batch.rows(none) == []
    assert batch.rows(some) == [(7, "seven", {"a": [1]})]
    failed = StatementBatch(driver)
    at = failed.add("SELECT 1 / %s", (0,))
    with pytest.raises(psycopg.errors.DivisionByZero):
        failed.run()
    with pytest.raises(psycopg.errors.PipelineAborted):
        failed.rows(at)


def test_outside_autocommit_the_batch_begins_the_transaction_psycopg_would(pg_url: str) -> None:
    with psycopg.connect(pg_url, prepare_threshold=None) as conn:  # not autocommit
        conn.execute("CREATE TABLE IF NOT EXISTS batch_tx (id text)")
        conn.commit()
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        batch = StatementBatch(conn)
        batch.add("INSERT INTO batch_tx VALUES (%s)", ("one",))
        batch.add("SELECT current_setting('transaction_isolation')")
        batch.run()
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        level = conn.execute("SELECT current_setting('transaction_isolation')").fetchone()
        assert level == ("repeatable read",)
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM batch_tx").fetchone() == (0,)
        conn.execute("DROP TABLE batch_tx")
        conn.commit()


def test_a_value_psycopg_cannot_adapt_is_refused_before_anything_is_sent(driver: Driver) -> None:
    batch = StatementBatch(driver)
    batch.add(INSERT, ("sent?", None, None, None))
    with pytest.raises(psycopg.ProgrammingError):
        batch.add(INSERT, ("x", object(), None, None))
    with pytest.raises(TypeError, match="placeholders"):
        batch.add(INSERT, ("too few",))
    assert rows(driver) == []


def test_a_batch_larger_than_the_socket_buffers_goes_through(driver: Driver) -> None:
    batch = StatementBatch(driver)
    payload = '{"x": "' + "y" * 4000 + '"}'
    batch.add_many(INSERT, [(f"big{i:04d}", None, None, payload) for i in range(1500)])
    batch.run()
    assert driver.execute("SELECT count(*) FROM batch_t").fetchone() == (1500,)


@pytest.mark.parametrize(
    "statement",
    [
        ("COPY batch_t (id) FROM STDIN", None),  # libpq would wait on COPY data forever
        ("SELECT " + ", ".join(["%s"] * 70_000), [1] * 70_000),  # past the protocol's 65,535
    ],
    ids=["a COPY", "too many parameters"],
)
def test_a_batch_that_fails_midway_closes_its_connection_and_raises_why(
    driver: Driver, statement: tuple[str, Any]
) -> None:
    """psycopg cannot use a connection left in pipeline mode with results unread: closed,
    its owner drops it (the group writer does)."""
    batch = StatementBatch(driver)
    batch.add("SELECT 1")
    batch.add(*statement)
    with pytest.raises(psycopg.Error) as failed:
        batch.run()
    assert not isinstance(failed.value, psycopg.errors.PipelineAborted)
    assert driver.closed


@pytest.mark.parametrize("via", VIAS)
def test_a_lost_connection_is_raised_as_psycopg_raises_it(
    driver: Driver, pg_url: str, via: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (driver.info.backend_pid,))
    batch = StatementBatch(driver)
    batch.add("SELECT 1")
    with pytest.raises(psycopg.OperationalError) as lost:
        run_via(via, batch)
    assert "pipeline" not in str(lost.value)  # the cause, not the clean-up's complaint
    assert driver.closed


def test_a_statement_without_parameters_goes_as_written(driver: Driver) -> None:
    batch = StatementBatch(driver)
    plain = batch.add("SELECT 'a%%b', '%s'")  # psycopg leaves both alone too
    batch.run()
    assert batch.rows(plain) == [("a%%b", "%s")]
    for wrong in ({"a": 1}, "ab"):
        with pytest.raises(TypeError, match="sequence"):
            batch.add("SELECT %s, %s", wrong)


def test_a_batch_cannot_run_inside_a_psycopg_pipeline(driver: Driver) -> None:
    batch = StatementBatch(driver)
    batch.add("SELECT 1")
    with driver.pipeline(), pytest.raises(psycopg.ProgrammingError, match="inside a pipeline"):
        batch.run()


def test_awaiting_the_results_lets_the_event_loop_run(driver: Driver) -> None:
    """While PostgreSQL works on the batch the loop goes on with other coroutines (the
    group writer's round trip no longer holds up the requests of its worker)."""
    batch = StatementBatch(driver)
    slept = batch.add("SELECT pg_sleep(0.3), 'done'")
    ticks: list[float] = []

    async def meanwhile() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main() -> None:
        ticking = asyncio.ensure_future(meanwhile())
        try:
            await batch.arun()
        finally:
            ticking.cancel()

    asyncio.run(main())
    assert batch.rows(slept) == [("", "done")]
    assert len(ticks) >= 10  # 0.3 s of 10 ms turns; blocked, there would be one


def test_a_batch_cancelled_while_awaited_closes_its_connection(driver: Driver) -> None:
    """Its results would never be read, and psycopg cannot use a connection left in
    pipeline mode: closed, as when it is lost, so that its owner drops it."""
    batch = StatementBatch(driver)
    batch.add("SELECT pg_sleep(5)")

    async def main() -> None:
        running = asyncio.ensure_future(batch.arun())
        await asyncio.sleep(0.1)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    asyncio.run(main())  # cancelled at once: the 5 s are not waited out
    assert driver.closed
