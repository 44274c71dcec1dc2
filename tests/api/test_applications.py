"""Every item approved, rejected and referred through the API; issuance, idempotency, precheck."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from approval_service.service.container import Container

from .conftest import HEADERS, People


def apply(
    client: TestClient,
    item: str,
    applicant: str,
    form: dict[str, Any] | None = None,
    **headers: str,
) -> dict[str, Any]:
    body: dict[str, Any] = {"item": item, "applicant_id": applicant}
    if form is not None:
        body["form"] = form
    response = client.post("/v1/applications", json=body, headers={**HEADERS, **headers})
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def codes(doc: dict[str, Any]) -> list[str]:
    return [r["code"] for r in doc["reasons"]]


def scalar(container: Container, sql: str, **params: Any) -> Any:
    with container.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def test_allowance_approved_issues_the_allowance_once(
    client: TestClient, people: People, container: Container
) -> None:
    doc = apply(client, "elderly-allowance", people.elderly)
    assert doc["decision"] == "approved" and doc["reasons"] == []
    assert doc["result"] == {
        "band": "80-89",
        "monthly_amount": "60.00",
        "payment_start": "2026-12-01",
    }
    assert doc["policy"]["id"] == "elderly-allowance" and len(doc["policy"]["sha256"]) == 64
    assert doc["decided_at"] == "2026-11-23T10:00:00+08:00"
    again = apply(client, "elderly-allowance", people.elderly)
    assert again["decision"] == "rejected" and codes(again) == ["ALREADY_RECEIVING"]
    active = scalar(
        container,
        "SELECT count(*) FROM allowances WHERE id_number = :i AND status = 'active'",
        i=people.elderly,
    )
    assert active == 1


def test_rejection_lists_every_reason(client: TestClient, people: People) -> None:
    doc = apply(client, "elderly-allowance", people.elderly_dead_elsewhere)
    assert doc["decision"] == "rejected"
    assert codes(doc) == ["DECEASED", "NOT_LOCAL_HUKOU"]
    assert all(r["message"] and r["basis"] for r in doc["reasons"])
    assert doc["result"] == {}


def test_unknown_person_is_referred_with_deadline_and_light(
    client: TestClient, people: People
) -> None:
    doc = apply(client, "elderly-allowance", people.stranger)
    assert doc["decision"] == "referred" and codes(doc) == ["PERSON_NOT_FOUND"]
    assert doc["deadline"] == "2026-11-26" and doc["supervision"] == "green"
    fetched = client.get(f"/v1/applications/{doc['application_id']}", headers=HEADERS).json()
    assert fetched["deadline"] == "2026-11-26" and fetched["supervision"] == "green"
    assert fetched["decision"] == "referred"


def test_senior_card_new_issues_a_card_number(
    client: TestClient, people: People, container: Container
) -> None:
    doc = apply(
        client, "senior-card-new", people.senior, {"mailing_address": "  亳州市涡阳县星园路1号 "}
    )
    assert doc["decision"] == "approved"
    result = doc["result"]
    assert result["card_type"] == "A" and result["issued_on"] == "2026-11-23"
    assert (
        result["expires_on"] == "2031-11-23"
        and result["mailing_address"] == "亳州市涡阳县星园路1号"
    )
    card = scalar(
        container,
        "SELECT card_no FROM senior_cards WHERE id_number = :i AND status = 'valid'",
        i=people.senior,
    )
    assert card == result["card_no"]


def test_senior_card_without_photo_is_referred(client: TestClient, people: People) -> None:
    doc = apply(client, "senior-card-new", people.senior_no_photo, {"mailing_address": "亳州市"})
    assert doc["decision"] == "referred" and codes(doc) == ["PHOTO_MISSING"]


def test_rent_withdrawal_lowers_balance(
    client: TestClient, people: People, container: Container
) -> None:
    doc = apply(client, "housing-fund-rent-withdrawal", people.renter)
    assert doc["decision"] == "approved" and doc["result"] == {"amount": "2400.00"}
    assert (
        str(
            scalar(
                container, "SELECT balance FROM fund_accounts WHERE id_number = :i", i=people.renter
            )
        )
        == "2600.00"
    )
    again = apply(client, "housing-fund-rent-withdrawal", people.renter)
    assert codes(again) == ["WITHDRAWN_RECENTLY"]


def test_retirement_withdrawal_closes_the_account(
    client: TestClient, people: People, container: Container
) -> None:
    doc = apply(client, "housing-fund-retirement-withdrawal", people.retiree)
    assert doc["decision"] == "approved"
    assert doc["result"] == {"amount": "1234.56", "close_account": True}
    assert (
        scalar(container, "SELECT status FROM fund_accounts WHERE id_number = :i", i=people.retiree)
        == "closed"
    )
    again = apply(client, "housing-fund-retirement-withdrawal", people.retiree)
    assert codes(again) == ["ACCOUNT_CLOSED", "INSUFFICIENT_BALANCE"]


def test_certification_approved_and_referred(client: TestClient, people: People) -> None:
    ok = apply(client, "elderly-allowance-certification", people.certified)
    assert ok["decision"] == "approved" and ok["result"] == {"certified_until": "2027-11-23"}
    unseen = apply(client, "elderly-allowance-certification", people.unseen)
    assert unseen["decision"] == "referred" and codes(unseen) == ["NO_RECENT_ACTIVITY"]
    not_receiving = apply(client, "elderly-allowance-certification", people.young)
    assert codes(not_receiving) == ["NOT_RECEIVING"]


def test_replacement_keeps_expiry_and_cancels_the_lost_card(
    client: TestClient, people: People, container: Container
) -> None:
    doc = apply(
        client, "senior-card-replacement", people.card_holder, {"mailing_address": "亳州市"}
    )
    assert doc["decision"] == "approved"
    assert (
        doc["result"]["expires_on"] == "2028-06-01"
        and doc["result"]["replaces_card_no"] == "AH341600000001"
    )
    old = scalar(
        container, "SELECT cancel_reason FROM senior_cards WHERE card_no = 'AH341600000001'"
    )
    assert old == "lost"
    none_left = apply(client, "senior-card-replacement", people.young)
    assert codes(none_left) == ["NO_VALID_CARD"]


def test_renewal_replaces_the_expiring_card(
    client: TestClient, people: People, container: Container
) -> None:
    doc = apply(client, "senior-card-renewal", people.renewer)
    assert doc["decision"] == "approved"
    assert (
        doc["result"]["expires_on"] == "2031-11-23"
        and doc["result"]["replaces_card_no"] == "AH341600000002"
    )
    assert (
        scalar(container, "SELECT cancel_reason FROM senior_cards WHERE card_no = 'AH341600000002'")
        == "renewed"
    )
    again = apply(client, "senior-card-renewal", people.renewer)
    assert codes(again) == ["NOT_DUE_FOR_RENEWAL"]


def test_idempotency_key_returns_the_first_response_and_issues_once(
    client: TestClient, people: People, container: Container
) -> None:
    body = {
        "item": "senior-card-new",
        "applicant_id": people.racer,
        "form": {"mailing_address": "亳州市"},
    }
    first = client.post(
        "/v1/applications", json=body, headers={**HEADERS, "Idempotency-Key": "k-1"}
    )
    second = client.post(
        "/v1/applications", json=body, headers={**HEADERS, "Idempotency-Key": "k-1"}
    )
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json() == second.json() and first.json()["decision"] == "approved"
    cards = scalar(
        container, "SELECT count(*) FROM senior_cards WHERE id_number = :i", i=people.racer
    )
    assert cards == 1
    changed = client.post(
        "/v1/applications",
        json={**body, "form": {"mailing_address": "别处"}},
        headers={**HEADERS, "Idempotency-Key": "k-1"},
    )
    assert (
        changed.status_code == 422 and changed.json()["error"]["code"] == "idempotency_key_reused"
    )


def test_precheck_decides_without_issuing(
    client: TestClient, people: People, container: Container
) -> None:
    response = client.post(
        "/v1/precheck",
        json={
            "item": "senior-card-new",
            "applicant_id": people.young,
            "form": {"mailing_address": "亳州市"},
        },
        headers=HEADERS,
    )
    assert response.status_code == 200
    assert codes(response.json()) == ["AGE_BELOW_MIN"]
    before = scalar(container, "SELECT count(*) FROM applications")
    eligible = client.post(
        "/v1/precheck",
        json={"item": "elderly-allowance-certification", "applicant_id": people.certified},
        headers=HEADERS,
    ).json()
    assert eligible["decision"] == "approved" and eligible["result"] == {
        "certified_until": "2027-11-23"
    }
    assert "application_id" not in eligible
    assert scalar(container, "SELECT count(*) FROM applications") == before


def test_decision_record_keeps_facts_trace_and_masked_applicant(
    client: TestClient, people: People, container: Container
) -> None:
    doc = apply(client, "elderly-allowance", people.young)
    with container.engine.connect() as conn:
        row = (
            conn.execute(
                text("SELECT * FROM applications WHERE id = :i"), {"i": doc["application_id"]}
            )
            .mappings()
            .one()
        )
    assert (
        row["channel"] == "portal"
        and row["applicant_masked"] == people.young[:6] + "********" + people.young[-4:]
    )
    assert row["policy_sha256"] == doc["policy"]["sha256"]
    assert row["facts"]["person"] == {
        "birth_date": "2000-01-01",
        "hukou_region": "341602",
        "status": "alive",
    }
    assert [t["code"] for t in row["trace"]][:2] == ["PERSON_NOT_FOUND", "DECEASED"]
    assert set(row["timings"]) == {"gather_ms", "decide_ms", "total_ms"}
    assert row["document"] is None  # the columns hold it (migration 0017)
    got = client.get(f"/v1/applications/{doc['application_id']}", headers=HEADERS)
    assert got.status_code == 200 and got.json() == doc


def test_items_lists_every_item_with_its_version(client: TestClient) -> None:
    items = client.get("/v1/items", headers=HEADERS).json()["items"]
    by_id = {i["item"]: i for i in items}
    assert len(by_id) == 7
    assert by_id["senior-card-new"]["name"] == "安徽省老年人优待证办理"
    assert by_id["senior-card-new"]["form"][0]["name"] == "mailing_address"


def test_operations_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["policies"] == 7
    metrics = client.get("/metrics").text
    assert (
        'miaopi_decisions_total{decision="approved",item="elderly-allowance",kind="apply"}'
        in metrics
    )
    assert (
        "miaopi_fact_cache_misses_total" in metrics and "miaopi_decision_seconds_bucket" in metrics
    )


@pytest.mark.parametrize(
    ("item", "who", "form", "code"),
    [
        ("housing-fund-rent-withdrawal", "fund_holder_unregistered", None, "PERSON_NOT_FOUND"),
        (
            "housing-fund-retirement-withdrawal",
            "fund_holder_unregistered",
            None,
            "PERSON_NOT_FOUND",
        ),
        (
            "senior-card-replacement",
            "card_holder_no_photo",
            {"mailing_address": "亳州市"},
            "PHOTO_MISSING",
        ),
        ("senior-card-renewal", "renewer_no_photo", None, "PHOTO_MISSING"),
    ],
)
def test_referrals_of_the_other_items(
    client: TestClient,
    people: People,
    container: Container,
    item: str,
    who: str,
    form: dict[str, str] | None,
    code: str,
) -> None:
    applicant = getattr(people, who)
    doc = apply(client, item, applicant, form)
    assert doc["decision"] == "referred" and codes(doc) == [code]
    assert doc["deadline"] == "2026-11-26" and doc["result"] == {}
    issued = scalar(
        container, "SELECT count(*) FROM fund_withdrawals WHERE id_number = :i", i=applicant
    )
    cards = scalar(
        container,
        "SELECT count(*) FROM senior_cards WHERE id_number = :i AND source = 'miaopi'",
        i=applicant,
    )
    assert (issued, cards) == (0, 0)  # a referral issues nothing
