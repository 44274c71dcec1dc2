"""The handbook's date rules, with its own examples."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from approval_service.policy.dates import (
    add_months,
    add_years,
    age_on,
    months_between,
    next_month_start,
)


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2026, 11, 30), 3, date(2027, 2, 28)),
        (date(2024, 2, 29), 60, date(2029, 2, 28)),
        (date(2026, 8, 31), 3, date(2026, 11, 30)),
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),
        (date(2026, 3, 31), -1, date(2026, 2, 28)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
    ],
)
def test_add_months_clamps_to_month_end(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


def test_add_years_from_leap_day() -> None:
    assert add_years(date(2024, 2, 29), 5) == date(2029, 2, 28)
    assert add_years(date(2024, 2, 29), 4) == date(2028, 2, 29)


@pytest.mark.parametrize(
    ("birth", "day", "age"),
    [
        (date(1946, 11, 23), date(2026, 11, 23), 80),
        (date(1946, 11, 24), date(2026, 11, 23), 79),
        (date(1944, 2, 29), date(2025, 2, 28), 80),
        (date(1944, 2, 29), date(2025, 3, 1), 81),
        (date(1944, 2, 29), date(2024, 2, 29), 80),
        (date(1944, 2, 29), date(2024, 2, 28), 79),
    ],
)
def test_age_on_follows_the_handbook(birth: date, day: date, age: int) -> None:
    assert age_on(birth, day) == age


def test_next_month_start_rolls_the_year() -> None:
    assert next_month_start(date(2026, 12, 31)) == date(2027, 1, 1)
    assert next_month_start(date(2026, 11, 23)) == date(2026, 12, 1)


def test_months_between_counts_calendar_months() -> None:
    assert months_between(date(2025, 1, 1), date(2025, 1, 31)) == 0
    assert months_between(date(2025, 1, 1), date(2025, 12, 1)) == 11


dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31))


@given(dates, st.integers(min_value=-600, max_value=600))
def test_add_months_keeps_day_or_clamps(start: date, months: int) -> None:
    result = add_months(start, months)
    assert months_between(start, result) == months
    if result.day != start.day:
        assert result.day < start.day
        assert (result + timedelta(days=1)).day == 1  # clamped to the month's last day


@given(dates, dates)
def test_age_increments_exactly_on_birthdays(birth: date, day: date) -> None:
    age = age_on(birth, day)
    assert add_years(birth, age) <= day or (birth.month, birth.day) == (2, 29)
    assert age_on(birth, day + timedelta(days=1)) - age in (0, 1)
