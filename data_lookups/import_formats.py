"""The nine import files: their fields, how each is checked, and the messages.

A hand-rolled validator (no model object per row): a million lines must be
checked in seconds. Each field check returns the value to store (ID numbers
upper-cased, hashes lower-cased) or raises :class:`FieldProblem` with a message
that says what is wrong and how to fix it. Values stay in their text form
(``2026-11-23``, ``2400.00``) so that they can be copied to the database as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

from data_lookups.id_numbers import id_number_problem

Value = str | int | bool | None
Check = Callable[[object], Value]


class FieldProblem(Exception):
    """A field value is invalid; the message says why and how to fix it."""


_MONEY = re.compile(r"\d{1,12}\.\d{2}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def id_check(today: date) -> Check:
    def check(value: object) -> str:
        if not isinstance(value, str):
            raise FieldProblem(f"{_show(value)} is not an ID number (a string of 18 characters)")
        problem = id_number_problem(value, today=today)
        if problem is not None:
            raise FieldProblem(f"invalid ID number: {problem}")
        return value.upper()

    return check


def text(max_len: int) -> Check:
    def check(value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise FieldProblem(f"{_show(value)} must be a non-empty string")
        if len(value) > max_len:
            raise FieldProblem(f"is {len(value)} characters long (at most {max_len})")
        if not value.isprintable():
            raise FieldProblem("contains control characters (tabs, line breaks); remove them")
        return value

    return check


def enum(*allowed: str) -> Check:
    options = " or ".join(repr(a) for a in allowed)

    def check(value: object) -> str:
        if value not in allowed or not isinstance(value, str):
            raise FieldProblem(f"{_show(value)} is not allowed (use {options})")
        return value

    return check


def _parse_date(value: object) -> date:
    if not isinstance(value, str) or len(value) != 10 or value[4] != "-" or value[7] != "-":
        raise FieldProblem(f"{_show(value)} is not a date (use YYYY-MM-DD)")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise FieldProblem(f"{_show(value)} is not a real date (use YYYY-MM-DD)") from None


def check_date(value: object) -> str:
    _parse_date(value)
    return value  # type: ignore[return-value]  # _parse_date proved it is a str


def past_date(today: date) -> Check:
    def check(value: object) -> str:
        if _parse_date(value) > today:
            raise FieldProblem(f"{_show(value)} is in the future (today is {today.isoformat()})")
        return value  # type: ignore[return-value]

    return check


def check_region(value: object) -> str:
    if not isinstance(value, str) or len(value) != 6 or not (value.isascii() and value.isdigit()):
        raise FieldProblem(f"{_show(value)} is not a region code (6 digits, like '341602')")
    return value


def check_money(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise FieldProblem(
            f'{_show(value)} is a JSON number; write a string with two decimals, like "2400.00"'
        )
    if not isinstance(value, str) or not _MONEY.fullmatch(value):
        raise FieldProblem(
            f"{_show(value)} is not an amount (a non-negative string with exactly two "
            'decimals, like "2400.00")'
        )
    return value


def check_count(value: object) -> int:
    if type(value) is not int or not 0 <= value <= 1200:
        raise FieldProblem(f"{_show(value)} is not a whole number of months (0 to 1200)")
    return value


def check_bool(value: object) -> bool:
    if type(value) is not bool:
        raise FieldProblem(f"{_show(value)} is not a boolean (use true or false)")
    return value


def check_sha256(value: object) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise FieldProblem(f"{_show(value)} is not a SHA-256 digest (64 hexadecimal characters)")
    return value.lower()


def check_card_type(value: object) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= 4
        or not (value.isascii() and value.isalnum())
    ):
        raise FieldProblem(f"{_show(value)} is not a card type (1-4 letters, like 'A')")
    return value


@dataclass(frozen=True)
class Column:
    name: str
    check: Check
    nullable: bool = False
    kind: str = "text"  # text | date | money | int | bool: how the database stores it


Row = dict[str, Value]
CrossCheck = Callable[[Row], list[tuple[str, str]]]


@dataclass(frozen=True)
class FileFormat:
    """One import file: its table, key (the field named first) and columns."""

    file: str
    table: str
    columns: tuple[Column, ...]
    cross_check: CrossCheck | None = None
    key: str = field(init=False)
    names: tuple[str, ...] = field(init=False)
    plan: tuple[tuple[str, Check, bool], ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.columns[0].name)
        object.__setattr__(self, "names", tuple(c.name for c in self.columns))
        object.__setattr__(self, "plan", tuple((c.name, c.check, c.nullable) for c in self.columns))


def _population_rules(row: Row) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if row["status"] == "deceased" and row["death_date"] is None:
        out.append(("death_date", "is null but status is 'deceased' (give the date of death)"))
    if row["status"] == "alive" and row["death_date"] is not None:
        out.append(("death_date", "is set but status is 'alive' (set status to 'deceased')"))
    death, born = row["death_date"], row["birth_date"]
    if isinstance(death, str) and isinstance(born, str) and death < born:
        out.append(("death_date", f"{death!r} is before the birth date {born!r}"))
    return out


def _card_rules(row: Row) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if row["status"] == "valid":
        if row["cancel_reason"] is not None or row["cancelled_on"] is not None:
            out.append(("cancel_reason", "a valid card has no cancel_reason or cancelled_on"))
    else:
        if row["cancel_reason"] is None:
            out.append(("cancel_reason", "a cancelled card needs 'lost' or 'renewed'"))
        if row["cancelled_on"] is None:
            out.append(("cancelled_on", "a cancelled card needs the date it was cancelled"))
    issued, expires = row["issued_on"], row["expires_on"]
    if isinstance(issued, str) and isinstance(expires, str) and expires < issued:
        out.append(("expires_on", f"{expires!r} is before issued_on {issued!r}"))
    return out


def _marriage_rules(row: Row) -> list[tuple[str, str]]:
    if row["id_number"] == row["spouse_id_number"]:
        return [("spouse_id_number", "is the person's own ID number")]
    return []


def file_formats(today: date) -> Sequence[FileFormat]:
    """The nine files of the contract, in the order they are imported."""
    past = past_date(today)
    check_id = id_check(today)
    return (
        FileFormat(
            "population.jsonl",
            "population",
            (
                Column("id_number", check_id),
                Column("name", text(100)),
                Column("gender", enum("M", "F")),
                Column("birth_date", past, kind="date"),
                Column("hukou_region", check_region),
                Column("status", enum("alive", "deceased")),
                Column("death_date", past, nullable=True, kind="date"),
                Column("last_seen_date", check_date, nullable=True, kind="date"),
            ),
            _population_rules,
        ),
        FileFormat(
            "low_income.jsonl",
            "low_income",
            (
                Column("id_number", check_id),
                Column("category", enum("dibao", "tekun")),
                Column("since", check_date, kind="date"),
            ),
        ),
        FileFormat(
            "allowances.jsonl",
            "allowances",
            (
                Column("id_number", check_id),
                Column("status", enum("active", "stopped")),
                Column("start_date", check_date, kind="date"),
                Column("monthly_amount", check_money, kind="money"),
            ),
        ),
        FileFormat(
            "senior_cards.jsonl",
            "senior_cards",
            (
                Column("card_no", text(32)),
                Column("id_number", check_id),
                Column("card_type", check_card_type),
                Column("status", enum("valid", "cancelled")),
                Column("issued_on", check_date, kind="date"),
                Column("expires_on", check_date, kind="date"),
                Column("cancel_reason", enum("lost", "renewed"), nullable=True),
                Column("cancelled_on", check_date, nullable=True, kind="date"),
            ),
            _card_rules,
        ),
        FileFormat(
            "photos.jsonl",
            "photos",
            (Column("id_number", check_id), Column("photo_sha256", check_sha256)),
        ),
        FileFormat(
            "fund_accounts.jsonl",
            "fund_accounts",
            (
                Column("id_number", check_id),
                Column("account_no", text(32)),
                Column("status", enum("normal", "sealed", "frozen", "closed")),
                Column("balance", check_money, kind="money"),
                Column("continuous_months", check_count, kind="int"),
                Column("has_outstanding_loan", check_bool, kind="bool"),
                Column("last_rent_withdrawal_date", check_date, nullable=True, kind="date"),
                Column(
                    "retirement_category", enum("male60", "female55", "female50"), nullable=True
                ),
            ),
        ),
        FileFormat(
            "properties.jsonl",
            "properties",
            (
                Column("property_id", text(64)),
                Column("id_number", check_id),
                Column("region", check_region),
            ),
        ),
        FileFormat(
            "marriages.jsonl",
            "marriages",
            (Column("id_number", check_id), Column("spouse_id_number", check_id)),
            _marriage_rules,
        ),
        FileFormat(
            "social_security.jsonl",
            "social_security",
            (
                Column("id_number", check_id),
                Column("retired_on", check_date, nullable=True, kind="date"),
            ),
        ),
    )


def check_line(fmt: FileFormat, obj: object) -> tuple[tuple[Value, ...] | None, list[str]]:
    """Validate one parsed line: the values in column order, or the problems found."""
    if not isinstance(obj, dict):
        return None, ['is not a JSON object (one object per line, like {"id_number": …})']
    try:  # the common case: every field present and valid
        values = [
            None if (raw := obj[name]) is None and nullable else check(raw)
            for name, check, nullable in fmt.plan
        ]
    except (KeyError, FieldProblem):
        return None, _problems(fmt, obj)
    if fmt.cross_check is not None:
        row = dict(zip(fmt.names, values, strict=True))
        cross = [f"{name}: {msg}" for name, msg in fmt.cross_check(row)]
        if cross:
            return None, cross
    return tuple(values), []


def _problems(fmt: FileFormat, obj: dict[str, object]) -> list[str]:
    """Every problem of a line known to have one (the slow path, for messages)."""
    problems: list[str] = []
    for col in fmt.columns:
        raw = obj.get(col.name, _MISSING)
        if raw is _MISSING:
            hint = " (write null if unknown)" if col.nullable else ""
            problems.append(f"{col.name}: is missing{hint}")
        elif raw is None:
            if not col.nullable:
                problems.append(f"{col.name}: must not be null")
        else:
            try:
                col.check(raw)
            except FieldProblem as problem:
                problems.append(f"{col.name}: {problem}")
    return problems


_MISSING = object()
