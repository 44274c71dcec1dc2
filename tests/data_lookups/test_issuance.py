"""Issuance: constraints make double issuing impossible; the caller's transaction survives."""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from registry_rows import fund_account, new_id, valid_card, write_jsonl
from sqlalchemy import Engine, text

from approval_service.errors import IssuanceConflict
from data_lookups.database import write_transaction
from data_lookups.facts import SqlFactSource
from data_lookups.importer import import_directory
from data_lookups.issuance import (
    cancel_card,
    close_fund_for_retirement,
    issue_allowance,
    issue_card,
    record_rent_withdrawal,
)

D = date(2026, 11, 23)
EXPIRES = date(2031, 11, 23)


def test_second_active_allowance_conflicts_and_the_transaction_survives(engine: Engine) -> None:
    me = new_id()
    with write_transaction(engine) as conn:
        issue_allowance(conn, me, date(2026, 12, 1), Decimal("60.00"), "a1")
        with pytest.raises(IssuanceConflict) as info:
            issue_allowance(conn, me, date(2026, 12, 1), Decimal("60.00"), "a2")
        assert me not in str(info.value)  # masked
        # still usable: the caller records its decision in the same transaction
        conn.execute(text("SELECT 1"))
    facts = SqlFactSource(engine).gather(me, frozenset({"allowances"}))
    assert facts["allowances"] == [
        {"status": "active", "start_date": date(2026, 12, 1), "monthly_amount": Decimal("60.00")}
    ]


def test_second_valid_card_conflicts(engine: Engine) -> None:
    me = new_id()
    with write_transaction(engine) as conn:
        first = issue_card(conn, me, "A", D, EXPIRES, "a1")
    with write_transaction(engine) as conn, pytest.raises(IssuanceConflict):
        issue_card(conn, me, "A", D, EXPIRES, "a2")
    with write_transaction(engine) as conn:
        cancel_card(conn, first, "lost", D)
        second = issue_card(conn, me, "A", D, EXPIRES, "a3")
    assert second != first and second.startswith("AH3416") and len(second) == 16
    with write_transaction(engine) as conn, pytest.raises(IssuanceConflict):
        cancel_card(conn, first, "lost", D)  # already cancelled
    with pytest.raises(ValueError):
        cancel_card(None, second, "stolen", D)  # type: ignore[arg-type]


def test_card_numbers_are_unique_under_concurrency(engine: Engine) -> None:
    numbers: list[str] = []
    lock = threading.Lock()

    def issue(n: int) -> None:
        for _ in range(10):
            with write_transaction(engine) as conn:
                card_no = issue_card(conn, new_id(), "A", D, EXPIRES, None)
            with lock:
                numbers.append(card_no)

    threads = [threading.Thread(target=issue, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(numbers) == 40 and len(set(numbers)) == 40


def test_issued_card_skips_a_number_an_import_already_uses(engine: Engine, tmp_path: Path) -> None:
    with write_transaction(engine) as conn:
        probe = issue_card(conn, new_id(), "A", D, EXPIRES, None)
    taken = f"AH3416{int(probe[6:]) + 1:010d}"
    write_jsonl(
        tmp_path,
        "senior_cards.jsonl",
        [valid_card(taken, new_id())],
    )
    assert import_directory(engine, tmp_path, today=D).ok
    with write_transaction(engine) as conn:
        assert issue_card(conn, new_id(), "A", D, EXPIRES, None) not in (probe, taken)


def _fund(engine: Engine, tmp_path: Path, status: str = "normal", balance: str = "3000.00") -> str:
    me: str = new_id()
    write_jsonl(
        tmp_path,
        "fund_accounts.jsonl",
        [fund_account(me, status, balance)],
    )
    assert import_directory(engine, tmp_path, today=D).ok
    return me


def test_rent_withdrawal_lowers_balance_and_sets_date(engine: Engine, tmp_path: Path) -> None:
    me = _fund(engine, tmp_path)
    with write_transaction(engine) as conn:
        record_rent_withdrawal(conn, me, Decimal("2400.00"), D, "r1")
    fund = SqlFactSource(engine).gather(me, frozenset({"fund"}))["fund"]
    assert fund["balance"] == Decimal("600.00")  # type: ignore[index]
    assert fund["last_rent_withdrawal_date"] == D  # type: ignore[index]
    with write_transaction(engine) as conn, pytest.raises(IssuanceConflict):
        record_rent_withdrawal(conn, me, Decimal("600.01"), D, "r2")  # more than the balance
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM fund_withdrawals")).scalar() == 1


def test_retirement_withdrawal_closes_the_account(engine: Engine, tmp_path: Path) -> None:
    me = _fund(engine, tmp_path, balance="1234.56")
    with write_transaction(engine) as conn, pytest.raises(IssuanceConflict):
        close_fund_for_retirement(conn, me, Decimal("1000.00"), D, "x")  # not the balance
    with write_transaction(engine) as conn:
        close_fund_for_retirement(conn, me, Decimal("1234.56"), D, "x")
    fund = SqlFactSource(engine).gather(me, frozenset({"fund"}))["fund"]
    assert fund["balance"] == Decimal("0.00") and fund["status"] == "closed"  # type: ignore[index]
    with write_transaction(engine) as conn, pytest.raises(IssuanceConflict):
        close_fund_for_retirement(conn, me, Decimal("0.00"), D, "y")


def test_frozen_account_cannot_be_closed(engine: Engine, tmp_path: Path) -> None:
    me = _fund(engine, tmp_path, status="frozen")
    with write_transaction(engine) as conn, pytest.raises(IssuanceConflict):
        close_fund_for_retirement(conn, me, Decimal("3000.00"), D, "x")


def test_balances_stay_exact_to_the_cent(engine: Engine, tmp_path: Path) -> None:
    """Float storage (SQLite NUMERIC) must not make a later full withdrawal miss by a hair."""
    me = _fund(engine, tmp_path, balance="1234.56")
    for step, amount in enumerate(("0.07", "600.00", "0.10", "0.20")):
        with write_transaction(engine) as conn:
            record_rent_withdrawal(conn, me, Decimal(amount), D, f"r{step}")
    fund = SqlFactSource(engine).gather(me, frozenset({"fund"}))["fund"]
    assert fund["balance"] == Decimal("634.19")  # type: ignore[index]
    with write_transaction(engine) as conn:
        close_fund_for_retirement(conn, me, Decimal("634.19"), D, "close")
    with write_transaction(engine) as conn, pytest.raises(IssuanceConflict):
        record_rent_withdrawal(conn, new_id(), Decimal("1.00"), D, "none")  # no account
