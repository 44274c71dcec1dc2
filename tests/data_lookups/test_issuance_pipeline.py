"""The pipelined issuer does what the direct one does, refuses what it refuses, in one trip.

Each case runs twice on real PostgreSQL, on two people with the same registry
rows: once through :class:`DirectIssuer` (savepoints, one primitive at a time),
once through :class:`PipelinedIssuer` (queued, sent by ``flush``). Both must
come to the same registry state, or both refuse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from registry_rows import fund_account, new_id, valid_card, write_jsonl
from sqlalchemy import Engine, text

from approval_service.errors import IssuanceConflict
from data_lookups.database import write_transaction
from data_lookups.facts import SqlFactSource
from data_lookups.importer import import_directory
from data_lookups.issuance import DirectIssuer, Issuer
from data_lookups.issuance_pipeline import PipelinedIssuer, SpareCardNumbers
from data_lookups.statement_batch import StatementBatch

D = date(2026, 11, 23)
EXPIRES = date(2031, 11, 23)
OLD_CARD = "old"  # stands for the person's imported valid card in the cases below

Case = Callable[[Issuer, str, str], None]  # (issuer, the person, their imported card)


def _card(i: Issuer, me: str) -> str:
    return i.issue_card(me, "A", D, EXPIRES, "app")


def _rent(amount: str, times: int = 1) -> Case:
    def work(i: Issuer, me: str, card: str) -> None:
        for n in range(times):
            i.record_rent_withdrawal(me, Decimal(amount), D, f"r{n}")

    return work


def _retire(amount: str) -> Case:
    return lambda i, me, card: i.close_fund_for_retirement(me, Decimal(amount), D, "x")


def _allowances(times: int) -> Case:
    def work(i: Issuer, me: str, card: str) -> None:
        for n in range(times):
            i.issue_allowance(me, D, Decimal("60"), f"a{n}")

    return work


def _renew(i: Issuer, me: str, card: str) -> None:
    i.cancel_card(card, "renewed", D, me)
    _card(i, me)


def _cancel_twice(i: Issuer, me: str, card: str) -> None:
    i.cancel_card(card, "lost", D, me)
    i.cancel_card(card, "lost", D, me)


CASES: list[tuple[str, str, Case, bool]] = [
    # (case, the fund account's status, what is issued, refused)
    ("allowance", "normal", _allowances(1), False),
    ("second active allowance", "normal", _allowances(2), True),
    ("rent within balance", "normal", _rent("2400.004"), False),
    ("rent of the whole balance", "normal", _rent("3000.00"), False),
    ("two rents in one transaction", "normal", _rent("1000.00", times=2), False),
    ("rent above balance", "normal", _rent("3000.01"), True),
    ("rent below a cent", "normal", _rent("0.004"), True),
    ("rent from a sealed account", "sealed", _rent("1.00"), True),
    ("retirement of the balance", "sealed", _retire("3000.00"), False),
    ("retirement of another amount", "normal", _retire("2999.99"), True),
    ("retirement from a frozen account", "frozen", _retire("3000.00"), True),
    ("renewal", "normal", _renew, False),
    ("second valid card", "normal", lambda i, me, card: _card(i, me) and None, True),
    ("card cancelled twice", "normal", _cancel_twice, True),
    ("someone else's card", "normal", lambda i, me, c: i.cancel_card(c, "lost", D, new_id()), True),
]


def _registry(engine: Engine, tmp_path: Path, people: list[str], fund_status: str) -> list[str]:
    """Import a fund account (3000.00) and one valid card per person; their card numbers."""
    cards = [f"AH3416{900_000_000 + n:010d}" for n, _ in enumerate(people)]
    write_jsonl(
        tmp_path,
        "fund_accounts.jsonl",
        [fund_account(me, fund_status, "3000.00") for me in people],
    )
    write_jsonl(
        tmp_path,
        "senior_cards.jsonl",
        [valid_card(card, me) for me, card in zip(people, cards, strict=True)],
    )
    assert import_directory(engine, tmp_path, today=D).ok
    return cards


@contextmanager
def _pipelined(engine: Engine, cards_expected: int = 0) -> Iterator[PipelinedIssuer]:
    with write_transaction(engine) as conn:
        issuer = PipelinedIssuer(conn.connection.driver_connection, cards_expected)  # type: ignore[arg-type]
        yield issuer
        issuer.flush()


@contextmanager
def _direct(engine: Engine) -> Iterator[Issuer]:
    with write_transaction(engine) as conn:
        yield DirectIssuer(conn)


def _state(engine: Engine, me: str) -> dict[str, Any]:
    facts = SqlFactSource(engine).gather(me, frozenset({"allowances", "cards", "fund"}))
    cards = [{k: v for k, v in c.items() if k != "card_no"} for c in facts["cards"] or []]
    with engine.connect() as conn:
        version = conn.execute(
            text("SELECT version FROM fact_versions WHERE id_number = :me"), {"me": me}
        ).scalar()
        withdrawals = conn.execute(
            text(
                "SELECT kind, amount, withdrawn_on, application_id FROM fund_withdrawals "
                "WHERE id_number = :me ORDER BY id"
            ),
            {"me": me},
        ).all()
    return {
        "allowances": facts["allowances"],
        "cards": cards,
        "fund": {k: v for k, v in (facts["fund"] or {}).items() if k != "account_no"},
        "withdrawals": [tuple(w) for w in withdrawals],
        "changed": version is not None,
    }


@pytest.mark.parametrize(
    ("case", "fund_status", "work", "refused"), CASES, ids=[c[0] for c in CASES]
)
def test_pipelined_issuer_matches_the_direct_one(
    pg_engine: Engine, tmp_path: Path, case: str, fund_status: str, work: Case, refused: bool
) -> None:
    direct_me, piped_me = new_id(), new_id()
    direct_card, piped_card = _registry(pg_engine, tmp_path, [direct_me, piped_me], fund_status)
    outcomes = []
    for issuing, me, card in (
        (_direct, direct_me, direct_card),
        (_pipelined, piped_me, piped_card),
    ):
        try:
            with issuing(pg_engine) as issuer:
                work(issuer, me, card)
            outcomes.append(False)
        except IssuanceConflict as error:
            assert me not in str(error)  # masked
            outcomes.append(True)
    assert outcomes == [refused, refused]
    direct, piped = _state(pg_engine, direct_me), _state(pg_engine, piped_me)
    assert direct == piped
    assert piped["changed"] is not refused  # a change bumps the version; a refusal leaves none


def _versions(engine: Engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT * FROM fact_versions ORDER BY 1"))]


def test_nothing_queued_changes_nothing(pg_engine: Engine) -> None:
    before = _versions(pg_engine)
    with _pipelined(pg_engine) as issuer:
        issuer.flush()
    assert _versions(pg_engine) == before


def _next_number(engine: Engine) -> int:
    """The value the card sequence hands out next."""
    with engine.connect() as conn:
        last, called = conn.execute(text("SELECT last_value, is_called FROM card_no_seq")).one()
    return int(last) + 1 if called else int(last)


def test_cards_are_drawn_together_and_skip_numbers_an_import_uses(
    pg_engine: Engine, tmp_path: Path
) -> None:
    first = _next_number(pg_engine)
    taken = f"AH3416{first + 1:010d}"  # the second number the next draw gives
    holder = new_id()
    write_jsonl(
        tmp_path,
        "senior_cards.jsonl",
        [valid_card(taken, holder)],
    )
    assert import_directory(pg_engine, tmp_path, today=D).ok
    people = [new_id() for _ in range(3)]
    with _pipelined(pg_engine, cards_expected=3) as issuer:
        numbers = [_card(issuer, me) for me in people]
    # three expected: one statement drew three; one was taken, so one more was drawn
    assert _next_number(pg_engine) == first + 4
    assert taken not in numbers and len(set(numbers)) == 3
    assert numbers == sorted(numbers)  # handed out in the order drawn
    with _pipelined(pg_engine, cards_expected=0) as issuer:  # none expected: still issues
        extra = _card(issuer, new_id())
    assert extra == f"AH3416{first + 4:010d}"


def test_a_conflict_loses_the_whole_queue(pg_engine: Engine) -> None:
    me, other = new_id(), new_id()
    conflict = pytest.raises(IssuanceConflict, match="already has an active allowance")
    with conflict, _pipelined(pg_engine) as issuer:
        issuer.issue_allowance(other, D, Decimal("60"), "fine")
        issuer.issue_allowance(me, D, Decimal("60"), "a")
        issuer.issue_allowance(me, D, Decimal("60"), "b")
    for person in (me, other):
        assert _state(pg_engine, person)["allowances"] == []


def test_a_bad_cancel_reason_is_refused_before_anything_is_sent(pg_engine: Engine) -> None:
    with _pipelined(pg_engine) as issuer, pytest.raises(ValueError, match="lost"):
        issuer.cancel_card("AH34160000000001", "stolen", D, new_id())


@pytest.mark.parametrize(
    "refused",
    [
        pytest.param(_rent("3000.01"), id="rent above balance"),
        pytest.param(_retire("2999.99"), id="retirement of another amount"),
        pytest.param(_cancel_twice, id="card cancelled twice"),
    ],
)
def test_a_refusal_writes_nothing_of_its_own_and_stops_the_issuer(
    pg_engine: Engine, tmp_path: Path, refused: Case
) -> None:
    """Even a caller that catches the conflict and commits (it must roll back) finds no
    withdrawal without its payment, and the issuer takes no more work."""
    me = new_id()
    (card,) = _registry(pg_engine, tmp_path, [me], "normal")
    before = _state(pg_engine, me)
    with write_transaction(pg_engine) as conn:
        issuer = PipelinedIssuer(conn.connection.driver_connection, 0)  # type: ignore[arg-type]
        refused(issuer, me, card)
        with pytest.raises(IssuanceConflict):
            issuer.flush()
        with pytest.raises(IssuanceConflict, match="roll it back"):
            issuer.issue_allowance(me, D, Decimal("60"), "after")
        with pytest.raises(IssuanceConflict, match="roll it back"):
            issuer.flush()
    after = _state(pg_engine, me)
    assert after["withdrawals"] == before["withdrawals"] == []
    assert after["fund"] == before["fund"] and after["allowances"] == []


def test_a_lost_connection_is_an_outage_and_a_deadlock_is_not() -> None:
    from data_lookups.database import connection_lost

    assert connection_lost(psycopg.OperationalError("server closed the connection"))
    assert not connection_lost(psycopg.errors.DeadlockDetected("deadlock detected"))
    assert not connection_lost(psycopg.errors.LockNotAvailable("could not obtain lock"))
    assert connection_lost(psycopg.errors.AdminShutdown("terminating connection"))


@pytest.mark.parametrize("taken_offset", [None, 0, 1])
def test_cards_drawn_ahead_in_a_pipeline_are_the_ones_a_draw_would_give(
    pg_engine: Engine, tmp_path: Path, taken_offset: int | None
) -> None:
    """The group writer draws the numbers in its first round trip (``draw_ahead``); the
    cards then get the sequence's next numbers, skipping one an import uses."""
    first = _next_number(pg_engine)
    taken = None
    if taken_offset is not None:
        taken = f"AH3416{first + taken_offset:010d}"
        write_jsonl(tmp_path, "senior_cards.jsonl", [valid_card(taken, new_id())])
        assert import_directory(pg_engine, tmp_path, today=D).ok
    people = [new_id() for _ in range(2)]
    with write_transaction(pg_engine) as conn:
        driver = conn.connection.driver_connection
        issuer = PipelinedIssuer(driver, cards_expected=2)  # type: ignore[arg-type]
        batch = StatementBatch(driver)  # type: ignore[arg-type]
        batch.add("SELECT 1")
        issuer.draw_ahead(batch)
        batch.run()
        assert _next_number(pg_engine) == first + 2  # drawn in that round trip already
        numbers = [_card(issuer, me) for me in people]
        issuer.flush()
    free = [f"AH3416{n:010d}" for n in range(first, first + 3) if f"AH3416{n:010d}" != taken]
    assert numbers == free[:2]
    assert _next_number(pg_engine) == first + (2 if taken is None else 3)  # one more drawn
    for me, number in zip(people, numbers, strict=True):
        assert [c["card_no"] for c in _cards(pg_engine, me)] == [number]


def _cards(engine: Engine, me: str) -> list[dict[str, Any]]:
    return list(SqlFactSource(engine).gather(me, frozenset({"cards"}))["cards"] or [])


def _drawn(engine: Engine, n: int) -> list[str]:
    """``n`` numbers drawn from the card sequence now, as an earlier group's spares."""
    with engine.connect() as conn:
        sql = "SELECT nextval('card_no_seq') FROM generate_series(1, :n)"
        values = conn.execute(text(sql), {"n": n}).scalars().all()
    return [f"AH3416{v:010d}" for v in values]


def test_numbers_given_are_handed_out_first_with_no_draw_and_the_rest_kept(
    pg_engine: Engine,
) -> None:
    given = _drawn(pg_engine, 3)
    after = _next_number(pg_engine)
    me, other = new_id(), new_id()
    with write_transaction(pg_engine) as conn:
        driver = conn.connection.driver_connection
        issuer = PipelinedIssuer(driver, cards_expected=0, card_numbers=given)  # type: ignore[arg-type]
        used = [_card(issuer, me), _card(issuer, other)]
        unused = issuer.unused_card_numbers()
        issuer.flush()
    assert used == given[:2] and unused == given[2:]
    assert _next_number(pg_engine) == after  # nothing drawn
    assert [c["card_no"] for c in _cards(pg_engine, other)] == [given[1]]


def test_numbers_drawn_ahead_and_not_used_are_kept_in_the_order_drawn(
    pg_engine: Engine,
) -> None:
    first = _next_number(pg_engine)
    with write_transaction(pg_engine) as conn:
        driver = conn.connection.driver_connection
        issuer = PipelinedIssuer(driver, cards_expected=4)  # type: ignore[arg-type]
        batch = StatementBatch(driver)  # type: ignore[arg-type]
        issuer.draw_ahead(batch)
        batch.run()
        used = _card(issuer, new_id())
        unused = issuer.unused_card_numbers()
        issuer.flush()
    assert used == f"AH3416{first:010d}"
    assert unused == [f"AH3416{n:010d}" for n in range(first + 1, first + 4)]
    with write_transaction(pg_engine) as conn:  # a draw nobody used is kept too
        driver = conn.connection.driver_connection
        issuer = PipelinedIssuer(driver, cards_expected=2)  # type: ignore[arg-type]
        batch = StatementBatch(driver)  # type: ignore[arg-type]
        issuer.draw_ahead(batch)
        batch.run()
        assert issuer.unused_card_numbers() == [f"AH3416{first + n:010d}" for n in (4, 5)]


SPARES: list[tuple[list[str], int, list[str], list[str], int]] = [
    # (kept, taken, given back, kept afterwards, wanted with keep=4)
    ([], 1, [], [], 4),  # fewer kept than asked for: none taken
    (["a"], 2, ["b"], ["a", "b"], 2),
    (["a", "b", "c"], 2, [], ["c"], 3),
    (["a"], 0, ["b", "c"], ["a", "b", "c"], 1),
    (["a", "b"], 2, ["b"], ["b"], 3),
    (["a", "b", "c", "d", "e"], 0, [], ["a", "b", "c", "d", "e"], 0),
]


@pytest.mark.parametrize(("kept", "taken", "back", "after", "wanted"), SPARES)
def test_spare_card_numbers_are_taken_in_order_and_topped_up_to_keep(
    kept: list[str], taken: int, back: list[str], after: list[str], wanted: int
) -> None:
    spare = SpareCardNumbers(keep=4)
    spare.give(kept)
    assert spare.take_exactly(taken) == (kept[:taken] if taken <= len(kept) else None)
    spare.give(back)
    assert list(spare) == after and len(spare) == len(after)
    assert spare.wanted() == wanted
