"""Import line validation: every field of every file, accepted and rejected values."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from data_lookups.import_formats import FileFormat, check_line, file_formats

TODAY = date(2026, 11, 23)
FORMATS = {f.file.removesuffix(".jsonl"): f for f in file_formats(TODAY)}
ID = "341602195801011234"
SPOUSE = "11010519491231002X"

GOOD: dict[str, dict[str, Any]] = {
    "population": {
        "id_number": ID,
        "name": "张三",
        "gender": "M",
        "birth_date": "1958-01-01",
        "hukou_region": "341602",
        "status": "alive",
        "death_date": None,
        "last_seen_date": "2026-10-01",
    },
    "low_income": {"id_number": ID, "category": "dibao", "since": "2020-01-01"},
    "allowances": {
        "id_number": ID,
        "status": "active",
        "start_date": "2024-01-01",
        "monthly_amount": "60.00",
    },
    "senior_cards": {
        "card_no": "AH34160000000001",
        "id_number": ID,
        "card_type": "A",
        "status": "valid",
        "issued_on": "2021-01-01",
        "expires_on": "2026-01-01",
        "cancel_reason": None,
        "cancelled_on": None,
    },
    "photos": {"id_number": ID, "photo_sha256": "ab" * 32},
    "fund_accounts": {
        "id_number": ID,
        "account_no": "GJJ1",
        "status": "normal",
        "balance": "1234.50",
        "continuous_months": 12,
        "has_outstanding_loan": False,
        "last_rent_withdrawal_date": None,
        "retirement_category": "male60",
    },
    "properties": {"property_id": "P1", "id_number": ID, "region": "341602"},
    "marriages": {"id_number": ID, "spouse_id_number": SPOUSE},
    "social_security": {"id_number": ID, "retired_on": "2018-01-01"},
}


def _check(file: str, **changes: Any) -> tuple[Any, list[str]]:
    row = dict(GOOD[file])
    for key, value in changes.items():
        if value is _DROP:
            row.pop(key)
        else:
            row[key] = value
    fmt: FileFormat = FORMATS[file]
    return check_line(fmt, row)


_DROP = object()


@pytest.mark.parametrize("file", sorted(GOOD))
def test_good_lines_are_accepted(file: str) -> None:
    values, problems = _check(file)
    assert problems == []
    assert values is not None and values[0] == GOOD[file][FORMATS[file].key]


ACCEPTED = [
    ("population", "id_number", "11010519491231002x", "11010519491231002X"),
    ("population", "gender", "F", "F"),
    ("population", "birth_date", "2026-11-23", "2026-11-23"),
    ("population", "birth_date", "2024-02-29", "2024-02-29"),
    ("population", "last_seen_date", None, None),
    ("population", "name", "买买提·艾力", "买买提·艾力"),
    ("allowances", "status", "stopped", "stopped"),
    ("allowances", "monthly_amount", "0.00", "0.00"),
    ("senior_cards", "card_type", "B", "B"),
    ("photos", "photo_sha256", "AB" * 32, "ab" * 32),
    ("fund_accounts", "status", "frozen", "frozen"),
    ("fund_accounts", "has_outstanding_loan", True, True),
    ("fund_accounts", "continuous_months", 0, 0),
    ("fund_accounts", "retirement_category", None, None),
    ("fund_accounts", "retirement_category", "female50", "female50"),
    ("fund_accounts", "last_rent_withdrawal_date", "2026-01-31", "2026-01-31"),
    ("low_income", "category", "tekun", "tekun"),
    ("social_security", "retired_on", None, None),
    ("properties", "region", "320102", "320102"),
]


@pytest.mark.parametrize(("file", "field", "value", "stored"), ACCEPTED)
def test_accepted_values(file: str, field: str, value: Any, stored: Any) -> None:
    values, problems = _check(file, **{field: value})
    assert problems == []
    assert values is not None
    assert values[FORMATS[file].names.index(field)] == stored


REJECTED = [
    ("population", "id_number", "341602195801011235", "check character"),
    ("population", "id_number", 341602195801011234, "not an ID number"),
    ("population", "id_number", None, "must not be null"),
    ("population", "id_number", _DROP, "is missing"),
    ("population", "name", "", "non-empty"),
    ("population", "name", "张\t三", "control characters"),
    ("population", "name", "张" * 101, "at most 100"),
    ("population", "gender", "male", "use 'M' or 'F'"),
    ("population", "birth_date", "1950-02-30", "not a real date (use YYYY-MM-DD)"),
    ("population", "birth_date", "1950/01/01", "not a date (use YYYY-MM-DD)"),
    ("population", "birth_date", "19500101", "not a date"),
    ("population", "birth_date", "2099-01-01", "in the future"),
    ("population", "hukou_region", "3416", "6 digits"),
    ("population", "hukou_region", 341602, "6 digits"),
    ("population", "hukou_region", "３４１６０２", "6 digits"),
    ("population", "status", "dead", "'alive' or 'deceased'"),
    ("population", "last_seen_date", "yesterday", "not a date"),
    ("population", "last_seen_date", _DROP, "is missing (write null if unknown)"),
    ("low_income", "category", "wubao", "'dibao' or 'tekun'"),
    ("low_income", "since", None, "must not be null"),
    ("allowances", "status", "Active", "'active' or 'stopped'"),
    ("allowances", "monthly_amount", 60, "JSON number"),
    ("allowances", "monthly_amount", 60.5, "JSON number"),
    ("allowances", "monthly_amount", "60", "two decimals"),
    ("allowances", "monthly_amount", "60.5", "two decimals"),
    ("allowances", "monthly_amount", "-60.00", "non-negative"),
    ("allowances", "start_date", "2024-13-01", "not a real date"),
    ("senior_cards", "card_no", None, "must not be null"),
    ("senior_cards", "card_type", "优待", "card type"),
    ("senior_cards", "status", "lost", "'valid' or 'cancelled'"),
    ("senior_cards", "cancel_reason", "stolen", "'lost' or 'renewed'"),
    ("photos", "photo_sha256", "abc", "SHA-256"),
    ("fund_accounts", "status", "open", "'normal' or 'sealed'"),
    ("fund_accounts", "balance", "1,234.50", "two decimals"),
    ("fund_accounts", "continuous_months", "12", "whole number"),
    ("fund_accounts", "continuous_months", -1, "whole number"),
    ("fund_accounts", "continuous_months", True, "whole number"),
    ("fund_accounts", "has_outstanding_loan", "false", "boolean"),
    ("fund_accounts", "has_outstanding_loan", 0, "boolean"),
    ("fund_accounts", "retirement_category", "male65", "'male60' or 'female55'"),
    ("properties", "region", "34160", "6 digits"),
    ("properties", "property_id", 17, "non-empty string"),
    ("marriages", "spouse_id_number", "110105194912310021", "check character"),
    ("marriages", "spouse_id_number", ID, "own ID number"),
    ("social_security", "retired_on", "2018-1-1", "not a date"),
]


@pytest.mark.parametrize(("file", "field", "value", "fragment"), REJECTED)
def test_rejected_values(file: str, field: str, value: Any, fragment: str) -> None:
    values, problems = _check(file, **{field: value})
    assert values is None
    assert any(p.startswith(f"{field}: ") and fragment in p for p in problems), problems


CROSS_FIELD = [
    ("population", {"status": "deceased"}, "death_date: is null but status is 'deceased'"),
    ("population", {"death_date": "2020-01-01"}, "status is 'alive'"),
    (
        "population",
        {"status": "deceased", "death_date": "1950-01-01"},
        "before the birth date",
    ),
    ("senior_cards", {"cancel_reason": "lost"}, "a valid card has no cancel_reason"),
    ("senior_cards", {"status": "cancelled"}, "needs 'lost' or 'renewed'"),
    ("senior_cards", {"expires_on": "2020-01-01"}, "before issued_on"),
]


@pytest.mark.parametrize(("file", "changes", "fragment"), CROSS_FIELD)
def test_fields_that_contradict_each_other(
    file: str, changes: dict[str, Any], fragment: str
) -> None:
    values, problems = _check(file, **changes)
    assert values is None
    assert any(fragment in p for p in problems), problems


def test_not_an_object() -> None:
    values, problems = check_line(FORMATS["population"], [1, 2])
    assert values is None and "not a JSON object" in problems[0]


def test_extra_fields_are_ignored() -> None:
    values, problems = _check("population", nation="汉")
    assert problems == [] and values is not None
