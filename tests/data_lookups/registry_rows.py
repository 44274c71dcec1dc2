"""Row helpers for the data-layer tests: fresh ID numbers, registry lines, files."""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from data_lookups.id_numbers import make_id_number

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


def write_jsonl(directory: Path, name: str, rows: list[Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    lines = [r if isinstance(r, str) else orjson.dumps(r).decode() for r in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
