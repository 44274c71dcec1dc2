"""A small group in one round trip, and the long way in two, on PostgreSQL.

``write_at_once`` sends the locks, the check that every stamp is still current, the
issuance, the records and the ``COMMIT`` in one pipeline. The writer relies on it
to be all or nothing: when PostgreSQL refuses any part (a stamp moved, a key was
used before, an issuance was refused) nothing stays, the connection is ready for
the long way, and the long way then writes the group. Round trips are counted in
libpq's trace, not timed: a statement that waits on its own adds a turn and fails
these tests.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import date
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Connection, Engine, text

from approval_service.service import group_store
from approval_service.service.prepared_rows import Prepared
from data_lookups.database import write_transaction
from data_lookups.facts import SqlFactSource
from data_lookups.issuance import Issuer, bump_versions

from .pg_groups import TODAY, client_turns, driver_of, rows_for, seen, with_fund
from .record_rows import new_id

IDLE = psycopg.pq.TransactionStatus.IDLE


@pytest.fixture(autouse=True)
def inserts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_store, "COPY_FROM", 10**9)  # a COPY is two more round trips


@contextmanager
def traced(conn: Connection, tmp_path: Path) -> Iterator[Callable[[], int]]:
    """Trace the connection's protocol; yields a function counting the client's turns
    (libpq writes the trace out when tracing stops: count after the block)."""
    trace = tmp_path / "libpq.trace"
    driver = driver_of(conn)
    with trace.open("w") as out:
        driver.pgconn.trace(out.fileno())
        driver.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield lambda: client_turns(trace)
        finally:
            driver.pgconn.untrace()


def stamps_of(engine: Engine, *people: str) -> dict[str, group_store.Stamp]:
    facts = SqlFactSource(engine)
    return {me: facts.stamp(me) for me in people}


GROUPS: dict[str, tuple[int, Callable[[Issuer, str], object]]] = {
    # (cards expected, what the group issues)
    "nothing issued": (0, lambda issuer, me: None),
    "an allowance": (0, lambda issuer, me: issuer.issue_allowance(me, TODAY, Decimal("60"), "a")),
    "a card": (1, lambda issuer, me: issuer.issue_card(me, "A", TODAY, date(2031, 12, 1), "c")),
}


def spare_numbers(engine: Engine, n: int) -> list[str]:
    """Card numbers drawn earlier (as a long-way group draws spares for the next ones)."""
    with engine.connect() as conn:
        sql = "SELECT nextval('card_no_seq') FROM generate_series(1, :n)"
        return [f"AH3416{v:010d}" for v in conn.execute(text(sql), {"n": n}).scalars()]


def at_once_via(
    via: str,
    conn: Connection,
    stamps: dict[str, group_store.Stamp],
    issuer: Issuer,
    rows: list[Prepared],
) -> bool:
    """The writer thread's way (``write_at_once``, in the connection's transaction block)
    or the event loop writer's (``awrite_at_once`` awaited on a loop, no block around)."""
    if via == "loop":
        return asyncio.run(group_store.awrite_at_once(conn, stamps, issuer, rows))
    return group_store.write_at_once(conn, stamps, issuer, rows)


def block(via: str, conn: Connection) -> AbstractContextManager[object]:
    """The writer thread's transaction block; the loop writer opens none (its batch
    carries the BEGIN and the COMMIT, or the ROLLBACK)."""
    return nullcontext() if via == "loop" else conn.begin()


VIAS = ["thread", "loop"]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("changed_before", [False, True], ids=["never changed", "changed"])
@pytest.mark.parametrize("case", list(GROUPS))
def test_a_small_group_at_once_costs_one_round_trip(
    engine: Engine, tmp_path: Path, case: str, changed_before: bool, via: str
) -> None:
    cards, work = GROUPS[case]
    numbers = spare_numbers(engine, cards)  # at hand: none is drawn in the group
    me = with_fund(engine, "10.00")
    if changed_before:  # a stamp with a version row, not the implicit 0
        with write_transaction(engine) as conn:
            bump_versions(conn, [me])
    stamps = stamps_of(engine, me)
    with engine.connect() as conn:
        with (
            traced(conn, tmp_path) as turns,
            block(via, conn),
        ):
            issuer = group_store.issuer(conn, cards_expected=0, card_numbers=numbers)
            work(issuer, me)
            done = at_once_via(via, conn, stamps, issuer, rows_for(me, "k" + me))
            elsewhere = seen(engine, me)  # durable before the writer's own commit
        assert done and turns() == 1
        assert driver_of(conn).autocommit is False  # the connection leaves as it came
    assert elsewhere["records"] == 1 and elsewhere["messages"] == 1
    assert elsewhere["allowances"] == (1 if case == "an allowance" else 0)
    with engine.connect() as other:
        sql = "SELECT card_no FROM senior_cards WHERE id_number = :i"
        assert list(other.execute(text(sql), {"i": me}).scalars()) == numbers


@pytest.mark.parametrize("case", list(GROUPS))
def test_the_long_way_costs_two_round_trips(engine: Engine, tmp_path: Path, case: str) -> None:
    """Opening the group (BEGIN, locks, stamps, earlier answers, card numbers) and finishing
    it (issuance, records, COMMIT): the first batch carries the BEGIN that psycopg
    would otherwise wait on alone first."""
    cards, work = GROUPS[case]
    me = with_fund(engine, "10.00")
    key = secrets.token_hex(8)
    with engine.connect() as conn:
        with (
            traced(conn, tmp_path) as turns,
            conn.begin(),
        ):
            issuer = group_store.issuer(conn, cards_expected=cards)
            facts = SqlFactSource(engine)
            group_store.open_group(conn, facts, [me], [("portal", key)], issuer)
            work(issuer, me)
            group_store.finish_group(conn, issuer, rows_for(me, key))
        assert turns() == 2
    assert seen(engine, me)["records"] == 1


def _bumped(engine: Engine, me: str) -> None:
    with write_transaction(engine) as conn:
        bump_versions(conn, [me])


def _imported(engine: Engine, me: str) -> None:
    with write_transaction(engine) as conn:
        conn.execute(text("UPDATE registry_state SET epoch = epoch + 1 WHERE id = 1"))


def _key_used(engine: Engine, me: str) -> None:
    other = new_id()
    with write_transaction(engine) as conn:
        issuer = group_store.issuer(conn, cards_expected=0)
        group_store.finish_group(conn, issuer, rows_for(other, "k" + me))


REFUSED: dict[str, tuple[Callable[[Engine, str], None], Callable[[Issuer, str], object]]] = {
    # (what happens after the stamps were read, what the group issues)
    "a stamp moved": (_bumped, GROUPS["an allowance"][1]),
    "an import since": (_imported, GROUPS["an allowance"][1]),
    "a key used before": (_key_used, GROUPS["an allowance"][1]),
    "an issuance refused": (
        lambda engine, me: None,
        lambda issuer, me: issuer.record_rent_withdrawal(me, Decimal("10.01"), TODAY, "r"),
    ),
}


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_group_at_once_leaves_nothing_and_the_long_way_open(
    engine: Engine, case: str, via: str
) -> None:
    since, work = REFUSED[case]
    me, other = with_fund(engine, "10.00"), new_id()
    stamps = stamps_of(engine, me, other)
    since(engine, me)
    before = seen(engine, me)
    with engine.connect() as conn:
        with conn.begin():
            issuer = group_store.issuer(conn, cards_expected=0)
            issuer.issue_allowance(other, TODAY, Decimal("60"), "fine")
            work(issuer, me)
            rows = rows_for(me, "k" + me) + rows_for(other)
            assert not at_once_via(via, conn, stamps, issuer, rows)
            assert driver_of(conn).info.transaction_status == IDLE
            assert seen(engine, me) == before
            assert seen(engine, other) == seen(engine, new_id())  # as for someone never seen
            # the long way on the same connection, in the same block
            issuer = group_store.issuer(conn, cards_expected=0)
            group_store.open_group(conn, SqlFactSource(engine), [me, other], [], issuer)
            group_store.finish_group(conn, issuer, rows_for(other))
        assert driver_of(conn).autocommit is False
    assert seen(engine, other)["records"] == 1


def can_lock(engine: Engine, me: str) -> bool:
    with engine.connect() as conn:
        sql = "SELECT pg_try_advisory_xact_lock(hashtextextended(:i, 0))"
        return bool(conn.execute(text(sql), {"i": me}).scalar())


def test_the_block_holds_locks_until_it_ends_and_rolls_back_if_it_raises(
    engine: Engine,
) -> None:
    """The BEGIN really is sent: in autocommit without it, each statement would be its
    own transaction and the people's locks gone at once."""
    me = with_fund(engine, "10.00")
    held = None
    with engine.connect() as conn:
        with pytest.raises(RuntimeError), conn.begin():
            issuer = group_store.issuer(conn, cards_expected=0)
            group_store.open_group(conn, SqlFactSource(engine), [me], [], issuer)
            issuer.issue_allowance(me, TODAY, Decimal("60"), "a")
            issuer.flush()
            held = not can_lock(engine, me)
            raise RuntimeError("the writer failed midway")
        driver = driver_of(conn)
        assert driver.autocommit is False and driver.info.transaction_status == IDLE
    assert held is True
    assert can_lock(engine, me)
    assert seen(engine, me)["allowances"] == 0 and seen(engine, me)["version"] is None
