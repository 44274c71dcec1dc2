"""Deadlines and supervision lights on the official calendar, across holidays."""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path

import pytest

from approval_service.service.workdays import HolidayFileError, WorkCalendar

CAL = WorkCalendar()


@pytest.mark.parametrize(
    ("decided", "deadline"),
    [
        # 2025 Spring Festival: 1/28–2/4 off, Sunday 1/26 and Saturday 2/8 worked
        (date(2025, 1, 27), date(2025, 2, 7)),
        (date(2025, 1, 24), date(2025, 2, 5)),  # Sunday 1/26 counts
        (date(2025, 2, 5), date(2025, 2, 8)),  # Saturday 2/8 counts: 2/6, 2/7, 2/8
        # 2025 National Day and Mid-Autumn: 10/1–10/8 off, Sunday 9/28 and Saturday 10/11 worked
        (date(2025, 9, 26), date(2025, 9, 30)),  # 9/28 (Sun) 9/29 9/30
        (date(2025, 9, 30), date(2025, 10, 11)),  # 10/9 10/10 10/11 (Sat)
        # 2026 Spring Festival: 2/15–2/23 off, Saturdays 2/14 and 2/28 worked
        (date(2026, 2, 13), date(2026, 2, 25)),  # 2/14 (Sat) 2/24 2/25
        (date(2026, 2, 26), date(2026, 3, 2)),  # 2/27 2/28 (Sat) 3/2
        # 2026 National Day: 10/1–10/7 off, Saturday 10/10 worked
        (date(2026, 9, 30), date(2026, 10, 10)),
        # an ordinary week
        (date(2026, 11, 23), date(2026, 11, 26)),
        (date(2026, 11, 27), date(2026, 12, 2)),
    ],
)
def test_three_working_days(decided: date, deadline: date) -> None:
    assert CAL.add_workdays(decided, 3) == deadline


@pytest.mark.parametrize(
    ("today", "deadline", "light"),
    [
        (date(2025, 2, 5), date(2025, 2, 7), "green"),
        (date(2025, 2, 6), date(2025, 2, 7), "green"),
        (date(2025, 2, 7), date(2025, 2, 7), "yellow"),
        (date(2025, 2, 8), date(2025, 2, 7), "red"),
        # during the holiday the only working day left is the deadline itself
        (date(2025, 1, 30), date(2025, 2, 5), "yellow"),
        (date(2025, 1, 26), date(2025, 2, 5), "green"),  # adjusted Sunday + 1/27 + 2/5
        (date(2025, 10, 9), date(2025, 10, 11), "green"),
        (date(2025, 10, 11), date(2025, 10, 11), "yellow"),
        (date(2025, 10, 12), date(2025, 10, 11), "red"),
        (date(2026, 2, 21), date(2026, 2, 25), "green"),  # 2/24 and 2/25 remain
        (date(2026, 2, 24), date(2026, 2, 25), "green"),
        (date(2026, 2, 25), date(2026, 2, 25), "yellow"),
    ],
)
def test_supervision_lights(today: date, deadline: date, light: str) -> None:
    assert CAL.supervision(today, deadline) == light


def test_uncovered_year_counts_weekdays_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    calendar = WorkCalendar()
    with caplog.at_level(logging.WARNING):
        assert calendar.add_workdays(date(2026, 12, 30), 3) == date(
            2027, 1, 4
        )  # 12/31, 1/1 (Fri), 1/4
        assert calendar.add_workdays(date(2027, 2, 5), 3) == date(2027, 2, 10)
    warnings = [r for r in caplog.records if "2027" in r.getMessage()]
    assert len(warnings) == 1


def test_published_schedule_file_is_used(tmp_path: Path) -> None:
    (tmp_path / "2027.json").write_text(
        json.dumps(
            {
                "holidays": [
                    "2027-01-01",
                    "2027-02-05",
                    "2027-02-06",
                    "2027-02-07",
                    "2027-02-08",
                    "2027-02-09",
                    "2027-02-10",
                    "2027-02-11",
                ],
                "workdays": ["2027-02-13"],
            }
        ),
        encoding="utf-8",
    )
    calendar = WorkCalendar.from_folder(tmp_path)
    assert calendar.add_workdays(date(2026, 12, 30), 3) == date(2027, 1, 5)  # 12/31, 1/4, 1/5
    assert calendar.add_workdays(date(2027, 2, 4), 3) == date(2027, 2, 15)  # 2/12, 2/13 (Sat), 2/15


@pytest.mark.parametrize(
    "content", ['{"holidays": ["2027-13-01"]}', "[]", '{"holidays": ["2026-01-01"]}', "{"]
)
def test_bad_schedule_file_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "2027.json").write_text(content, encoding="utf-8")
    with pytest.raises(HolidayFileError, match=r"2027\.json"):
        WorkCalendar.from_folder(tmp_path)
