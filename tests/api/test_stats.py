"""Statistics over a generated month of applications, reviews on time and late."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta

from fastapi.testclient import TestClient

from approval_service.service.applications import ApplicationService
from approval_service.service.clock import FixedClock
from approval_service.service.container import Container
from approval_service.service.review import review

from .conftest import HEADERS, ZONE, People

START = date(2026, 10, 26)
DAYS = 30


def at(container: Container, day: date) -> None:
    container.clock = FixedClock(ZONE, datetime(day.year, day.month, day.day, 10, 0, tzinfo=ZONE))


def test_a_month_of_applications(client: TestClient, container: Container, people: People) -> None:
    service = ApplicationService(container)
    expected: dict[tuple[str, str], Counter[str]] = {}
    referrals: list[tuple[date, str]] = []
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        at(container, day)
        month = day.strftime("%Y-%m")
        for item, person in (
            ("elderly-allowance-certification", people.certified),
            ("elderly-allowance", people.young),
            ("elderly-allowance", people.stranger),
        ):
            doc, _ = service.apply("portal", item, person, None)
            counts = expected.setdefault((item, month), Counter())
            counts["applications"] += 1
            counts[doc["decision"]] += 1
            if doc["decision"] == "referred":
                referrals.append((day, doc["application_id"]))
    reason = [{"code": "NOT_FOUND_CONFIRMED", "message": "窗口核实查无此人。"}]
    for index, (day, application_id) in enumerate(referrals):
        deadline = container.calendar.add_workdays(day, 3)
        if index < 10:
            at(container, day)
        elif index < 15:
            at(container, deadline + timedelta(days=1))
        else:
            continue
        review(service, application_id, "rejected", "审核员", reason)
    at(container, date(2026, 11, 30))
    open_overdue = sum(
        1
        for day, _ in referrals[15:]
        if container.calendar.add_workdays(day, 3) < date(2026, 11, 30)
    )
    response = client.get(
        "/v1/stats",
        params={"from": START.isoformat(), "to": "2026-11-24", "period": "month"},
        headers=HEADERS,
    )
    assert response.status_code == 200, response.text
    rows = {(r["item"], r["period"]): r for r in response.json()["stats"]}
    assert set(rows) == set(expected)
    for key, counts in expected.items():
        row = rows[key]
        assert row["applications"] == counts["applications"]
        assert row["auto_decided_share"] == round(
            1 - counts["referred"] / counts["applications"], 4
        )
        assert row["approval_rate"] == round(counts["approved"] / counts["applications"], 4)
        assert (
            row["decision_ms"]["median"] is not None
            and row["decision_ms"]["p99"] >= row["decision_ms"]["median"]
        )
    october = [d for d, _ in referrals if d.month == 10]
    assert rows[("elderly-allowance", "2026-10")]["referrals"] == len(october)
    overdue = sum(r["overdue_referrals"] for r in rows.values())
    assert overdue == 5 + open_overdue
    open_total = sum(r["open_referrals"] for r in rows.values())
    assert open_total == len(referrals) - 15
    daily = client.get(
        "/v1/stats", params={"from": "2026-11-02", "to": "2026-11-02"}, headers=HEADERS
    ).json()
    assert [(r["item"], r["applications"]) for r in daily["stats"]] == [
        ("elderly-allowance", 2),
        ("elderly-allowance-certification", 1),
    ]
    bad = client.get(
        "/v1/stats", params={"from": "2026-11-02", "to": "2026-10-02"}, headers=HEADERS
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "to"
