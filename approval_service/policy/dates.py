"""Date arithmetic exactly as the handbook defines it.

- Age on D: years between the birth date and D, one less before the birthday;
  someone born on 29 February turns a year older on 1 March in common years.
- Adding months or years keeps the day of month, clamped to the month's end
  (2026-11-30 + 3 months = 2027-02-28; 2024-02-29 + 5 years = 2029-02-28).
"""

from __future__ import annotations

from datetime import date, timedelta

_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def add_months(day: date, months: int) -> date:
    year, month0 = divmod(day.year * 12 + day.month - 1 + months, 12)
    dom = day.day
    if dom > 28:
        last = _MONTH_DAYS[month0] + (month0 == 1 and is_leap(year))
        if dom > last:
            dom = last
    return date(year, month0 + 1, dom)


def add_years(day: date, years: int) -> date:
    return add_months(day, 12 * years)


def add_days(day: date, days: int) -> date:
    return day + timedelta(days=days)


def month_start(day: date) -> date:
    return date(day.year, day.month, 1)


def next_month_start(day: date) -> date:
    return date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)


def months_between(start: date, end: date) -> int:
    """Whole calendar months from ``start``'s month to ``end``'s month (2025-01 to 2025-01 is 0)."""
    return (end.year - start.year) * 12 + end.month - start.month


def days_between(start: date, end: date) -> int:
    return (end - start).days
