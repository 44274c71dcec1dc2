"""Row helpers for the data-layer tests: fresh ID numbers, registry lines, files."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from data_lookups.database import write_transaction
from data_lookups.id_numbers import make_id_number
from data_lookups.importer import import_directory
from data_lookups.issuance import issue_card

_seq = itertools.count(1)


def new_id(birth: date | None = None, region: str = "341602") -> str:
    """A fresh valid ID number (unique within the test run)."""
    n = next(_seq)
    born = birth or date(1940, 1, 1) + timedelta(days=n // 1000)
    return make_id_number(region, born, n % 1000)


def person(id_number: str, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id_number": id_number,
        "name": "张秀英",
        "gender": "F",
        "birth_date": f"{id_number[6:10]}-{id_number[10:12]}-{id_number[12:14]}",
        "hukou_region": "341602",
        "status": "alive",
        "death_date": None,
        "last_seen_date": "2026-10-01",
    }
    row.update(overrides)
    return row


def valid_card(card_no: str, id_number: str) -> dict[str, Any]:
    """An imported senior card, valid until 2027."""
    return {
        "card_no": card_no,
        "id_number": id_number,
        "card_type": "A",
        "status": "valid",
        "issued_on": "2022-01-01",
        "expires_on": "2027-01-01",
        "cancel_reason": None,
        "cancelled_on": None,
    }


def fund_account(
    id_number: str, status: str = "normal", balance: str = "3000.00"
) -> dict[str, Any]:
    """A provident-fund account line."""
    return {
        "id_number": id_number,
        "account_no": f"G{id_number}",
        "status": status,
        "balance": balance,
        "continuous_months": 12,
        "has_outstanding_loan": False,
        "last_rent_withdrawal_date": None,
        "retirement_category": "male60",
    }


def couple_rows(me: str, spouse: str) -> dict[str, list[dict[str, Any]]]:
    """Registry lines, by file name, of a married couple with every shape of fact: ``me``
    has a low-income record, a stopped allowance, cards ``C{me}1`` (cancelled, lost) and
    ``C{me}2`` (valid), fund account ``G{me}`` and a retirement; ``spouse`` owns
    properties ``P{spouse}1`` (out of the city) and ``P{spouse}2``. No population lines."""
    return {
        "low_income": [{"id_number": me, "category": "tekun", "since": "2019-05-01"}],
        "allowances": [
            {
                "id_number": me,
                "status": "stopped",
                "start_date": "2021-01-01",
                "monthly_amount": "50.00",
            }
        ],
        "senior_cards": [
            {
                "card_no": f"C{me}2",
                "id_number": me,
                "card_type": "B",
                "status": "valid",
                "issued_on": "2023-01-01",
                "expires_on": "2028-01-01",
                "cancel_reason": None,
                "cancelled_on": None,
            },
            {
                "card_no": f"C{me}1",
                "id_number": me,
                "card_type": "B",
                "status": "cancelled",
                "issued_on": "2020-01-01",
                "expires_on": "2025-01-01",
                "cancel_reason": "lost",
                "cancelled_on": "2023-01-01",
            },
        ],
        "fund_accounts": [
            {
                **fund_account(me, "normal", "1234.50"),
                "continuous_months": 7,
                "retirement_category": "female55",
            }
        ],
        "properties": [
            {"property_id": f"P{spouse}2", "id_number": spouse, "region": "341602"},
            {"property_id": f"P{spouse}1", "id_number": spouse, "region": "320102"},
        ],
        "marriages": [
            {"id_number": me, "spouse_id_number": spouse},
            {"id_number": spouse, "spouse_id_number": me},
        ],
        "social_security": [{"id_number": me, "retired_on": "1999-03-01"}],
    }


def write_jsonl(directory: Path, name: str, rows: list[Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    lines = [r if isinstance(r, str) else orjson.dumps(r).decode() for r in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def residents_of_every_shape(engine: Engine, directory: Path) -> dict[str, str]:
    """Residents with every shape of fact, by role."""
    ids = {
        "rich": new_id(date(1944, 2, 29)),
        "spouse": new_id(region="320102"),
        "bare": new_id(),  # population row only, no fact_versions row
        "versioned": new_id(),  # has a fact_versions row (a card was issued)
    }
    rich, spouse = ids["rich"], ids["spouse"]
    write_jsonl(
        directory,
        "population.jsonl",
        [
            person(rich, name='王 "秀" \\英'),  # quote and backslash: escaped by PostgreSQL
            person(spouse, gender="M", last_seen_date=None),
            person(ids["bare"]),
            person(ids["versioned"]),
        ],
    )
    files = couple_rows(rich, spouse)
    files["fund_accounts"].append(
        {
            **fund_account(ids["versioned"], "sealed", "0.10"),
            "continuous_months": 0,
            "has_outstanding_loan": True,
            "last_rent_withdrawal_date": "2024-02-29",
            "retirement_category": None,
        }
    )
    for name, rows in files.items():
        write_jsonl(directory, f"{name}.jsonl", rows)
    report = import_directory(engine, directory, today=date(2026, 11, 23))
    assert report.ok, report.problems()
    with write_transaction(engine) as conn:
        issue_card(conn, ids["versioned"], "B", date(2026, 11, 23), date(2031, 11, 23), None)
    ids["unregistered"] = new_id()  # in no registry at all
    return ids
