"""Built-in functions of the policy language: signatures and implementations.

Both backends call these implementations for the date functions, which the
handbook defines once (:mod:`approval_service.policy.dates`); they are tested
on their own against the handbook's examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from approval_service.policy import dates
from approval_service.policy.types import BOOL, DATE, INT, TEXT, Type


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple[Type | str, ...]  # a Type, or "num"/"ordered" for polymorphic arguments
    returns: Type | str  # a Type, or "join" for the numeric/ordered join of the arguments
    impl: Callable[..., Any]
    doc: str


def _starts_with(text: str, prefix: str) -> bool:
    return text.startswith(prefix)


def _min(a: Any, b: Any) -> Any:
    return a if a <= b else b


def _max(a: Any, b: Any) -> Any:
    return a if a >= b else b


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function(
            "age_on", (DATE, DATE), INT, dates.age_on, "周岁: age on a date, from a birth date"
        ),
        Function(
            "add_days", (DATE, INT), DATE, dates.add_days, "a date plus N days (N may be negative)"
        ),
        Function(
            "add_months",
            (DATE, INT),
            DATE,
            dates.add_months,
            "a date plus N months, clamped to month end",
        ),
        Function(
            "add_years",
            (DATE, INT),
            DATE,
            dates.add_years,
            "a date plus N years, clamped to month end",
        ),
        Function(
            "month_start", (DATE,), DATE, dates.month_start, "the first day of the date's month"
        ),
        Function(
            "next_month_start",
            (DATE,),
            DATE,
            dates.next_month_start,
            "the first day of the next month",
        ),
        Function(
            "months_between",
            (DATE, DATE),
            INT,
            dates.months_between,
            "calendar months from the first date's month to the second's",
        ),
        Function(
            "days_between",
            (DATE, DATE),
            INT,
            dates.days_between,
            "days from the first date to the second",
        ),
        Function(
            "starts_with", (TEXT, TEXT), BOOL, _starts_with, "whether a text begins with a prefix"
        ),
        Function("min", ("ordered", "ordered"), "join", _min, "the smaller of two values"),
        Function("max", ("ordered", "ordered"), "join", _max, "the larger of two values"),
    )
}
