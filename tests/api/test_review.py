"""Referred cases: queue order and lights, officer approval (issuing once) and rejection."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from approval_service.service.clock import FixedClock
from approval_service.service.container import Container

from .conftest import HEADERS, ZONE, People


def at(container: Container, day: str) -> None:
    container.clock = FixedClock(
        ZONE, datetime.fromisoformat(f"{day}T09:00:00").replace(tzinfo=ZONE)
    )


@pytest.fixture(autouse=True)
def reset_clock(container: Container) -> Iterator[None]:
    yield
    at(container, "2026-11-23")


def apply(
    client: TestClient, item: str, applicant: str, form: dict[str, str] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "item": item,
        "applicant_id": applicant,
        **({"form": form} if form else {}),
    }
    response = client.post("/v1/applications", json=body, headers=HEADERS)
    assert response.status_code == 201, response.text
    return dict(response.json())


def queue(client: TestClient) -> list[dict[str, Any]]:
    return list(client.get("/v1/review-queue", headers=HEADERS).json()["cases"])


def test_queue_is_ordered_by_urgency_with_lights(
    client: TestClient, container: Container, people: People
) -> None:
    at(container, "2026-11-23")
    later = apply(client, "elderly-allowance-certification", people.unseen)
    at(container, "2026-11-20")
    earlier = apply(
        client, "senior-card-new", people.senior_no_photo, {"mailing_address": "亳州市"}
    )
    assert (earlier["deadline"], later["deadline"]) == ("2026-11-25", "2026-11-26")
    at(container, "2026-11-25")
    cases = queue(client)
    ids = [c["application_id"] for c in cases]
    assert ids.index(earlier["application_id"]) < ids.index(later["application_id"])
    by_id = {c["application_id"]: c for c in cases}
    assert by_id[earlier["application_id"]]["supervision"] == "yellow"
    assert by_id[later["application_id"]]["supervision"] == "green"
    assert by_id[earlier["application_id"]]["applicant"].count("*") == 8
    for doc in (earlier, later):  # the moment as the document shows it: the city's, +08:00
        assert by_id[doc["application_id"]]["decided_at"] == doc["decided_at"]
        assert doc["decided_at"].endswith("+08:00")
    at(container, "2026-11-26")
    assert (
        client.get(f"/v1/applications/{earlier['application_id']}", headers=HEADERS).json()[
            "supervision"
        ]
        == "red"
    )


def test_officer_approval_issues_once(
    client: TestClient, container: Container, people: People
) -> None:
    case = next(c for c in queue(client) if c["item"] == "senior-card-new")
    body = {"decision": "approved", "officer": "王科员"}
    url = f"/v1/applications/{case['application_id']}/review"

    def fire(_: int) -> int:
        return client.post(url, json=body, headers=HEADERS).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(fire, range(4)))
    assert statuses == [200, 409, 409, 409]
    doc = client.get(f"/v1/applications/{case['application_id']}", headers=HEADERS).json()
    assert doc["decision"] == "approved" and doc["reasons"] == []
    assert doc["review"]["officer"] == "王科员" and "supervision" not in doc
    assert doc["result"]["card_no"].startswith("AH") and doc["result"]["card_type"] == "A"
    with container.engine.connect() as conn:
        cards = conn.execute(
            text("SELECT count(*) FROM senior_cards WHERE id_number = :i AND status = 'valid'"),
            {"i": people.senior_no_photo},
        ).scalar()
        texts = (
            conn.execute(
                text("SELECT text FROM outbox WHERE application_id = :a ORDER BY created_at"),
                {"a": case["application_id"]},
            )
            .scalars()
            .all()
        )
    assert cards == 1
    assert (
        "已转工作人员审核" in texts[0]
        and "经人工审核已办结" in texts[1]
        and doc["result"]["card_no"] in texts[1]
    )
    assert case["application_id"] not in [c["application_id"] for c in queue(client)]


def test_officer_rejection_needs_reasons(client: TestClient, people: People) -> None:
    case = next(c for c in queue(client) if c["item"] == "elderly-allowance-certification")
    url = f"/v1/applications/{case['application_id']}/review"
    missing = client.post(url, json={"decision": "rejected", "officer": "李科员"}, headers=HEADERS)
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "reasons"
    body = {
        "decision": "rejected",
        "officer": "李科员",
        "reasons": [{"code": "NOT_ALIVE_CONFIRMED", "message": "上门核实未见本人。"}],
    }
    done = client.post(url, json=body, headers=HEADERS)
    assert done.status_code == 200
    doc = done.json()
    assert doc["decision"] == "rejected" and doc["reasons"][0]["basis"] == "窗口工作人员审核"
    again = client.post(url, json=body, headers=HEADERS)
    assert again.status_code == 409 and again.json()["error"]["code"] == "review_conflict"


def test_approval_impossible_without_registry_data(client: TestClient, people: People) -> None:
    referred = apply(client, "elderly-allowance", people.stranger)
    response = client.post(
        f"/v1/applications/{referred['application_id']}/review",
        json={"decision": "approved", "officer": "赵科员"},
        headers=HEADERS,
    )
    assert response.status_code == 409 and "person" in response.json()["error"]["message"]


def test_review_of_automatic_or_unknown_application(client: TestClient, people: People) -> None:
    automatic = apply(client, "elderly-allowance", people.young)
    body = {"decision": "approved", "officer": "x"}
    assert (
        client.post(
            f"/v1/applications/{automatic['application_id']}/review", json=body, headers=HEADERS
        ).status_code
        == 409
    )
    assert (
        client.post("/v1/applications/nope/review", json=body, headers=HEADERS).status_code == 404
    )
    bad = client.post(
        f"/v1/applications/{automatic['application_id']}/review",
        json={"decision": "maybe", "officer": "x"},
        headers=HEADERS,
    )
    assert bad.status_code == 422
