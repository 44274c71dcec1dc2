"""Bad input gets a clear JSON error naming the field; never a 500, nothing recorded."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from approval_service.service.container import Container

from .conftest import HEADERS, People

VALID = "341602194001011236"  # overwritten per test with a registry person


def count(container: Container) -> int:
    with container.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM applications")).scalar_one())


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"item": "no-such-item", "applicant_id": "@"}, 404, "unknown_item", "item"),
        ({"item": "elderly-allowanse", "applicant_id": "@"}, 404, "unknown_item", "item"),
        (
            {"item": "elderly-allowance", "applicant_id": "341602194001011235"},
            422,
            "invalid_id_number",
            "applicant_id",
        ),
        (
            {"item": "elderly-allowance", "applicant_id": "34160219400101123"},
            422,
            "invalid_id_number",
            "applicant_id",
        ),
        (
            {"item": "elderly-allowance", "applicant_id": "341602194002301234"},
            422,
            "invalid_id_number",
            "applicant_id",
        ),
        (
            {"item": "elderly-allowance", "applicant_id": "@", "extra": 1},
            422,
            "invalid_request",
            "extra",
        ),
        ({"item": "elderly-allowance"}, 422, "invalid_request", "applicant_id"),
        (
            {"item": "senior-card-new", "applicant_id": "@"},
            422,
            "invalid_request",
            "form.mailing_address",
        ),
        (
            {"item": "senior-card-new", "applicant_id": "@", "form": {"mailing_address": ""}},
            422,
            "invalid_request",
            "form.mailing_address",
        ),
        (
            {
                "item": "senior-card-new",
                "applicant_id": "@",
                "form": {"mailing_address": "长" * 201},
            },
            422,
            "invalid_request",
            "form.mailing_address",
        ),
        (
            {"item": "elderly-allowance", "applicant_id": "@", "form": {"colour": "red"}},
            422,
            "invalid_request",
            "form.colour",
        ),
        ({"item": 5, "applicant_id": "@"}, 422, "invalid_request", "item"),
    ],
)
def test_rejected_requests(
    client: TestClient,
    container: Container,
    people: People,
    body: dict[str, Any],
    status: int,
    code: str,
    field: str,
) -> None:
    if body.get("applicant_id") == "@":
        body = {**body, "applicant_id": people.young}
    before = count(container)
    for path in ("/v1/applications", "/v1/precheck"):
        response = client.post(path, json=body, headers=HEADERS)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code and error["message"]
        assert error.get("field") == field
    assert count(container) == before


def test_unknown_item_suggests_the_right_one(client: TestClient, people: People) -> None:
    response = client.post(
        "/v1/applications",
        json={"item": "elderly-allowanse", "applicant_id": people.young},
        headers=HEADERS,
    )
    assert "did you mean `elderly-allowance`?" in response.json()["error"]["message"]


def test_id_number_lower_case_x_is_accepted(client: TestClient) -> None:
    response = client.post(
        "/v1/precheck",
        json={"item": "elderly-allowance", "applicant_id": "11010519491231002x"},
        headers=HEADERS,
    )
    assert (
        response.status_code == 200 and response.json()["reasons"][0]["code"] == "PERSON_NOT_FOUND"
    )


@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"item": "elderly-allowance",}', b"[]"])
def test_malformed_json(client: TestClient, raw: bytes) -> None:
    response = client.post(
        "/v1/applications", content=raw, headers={**HEADERS, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] in ("malformed_json", "invalid_request")


def test_body_over_16_kib(client: TestClient, people: People) -> None:
    body = {
        "item": "senior-card-new",
        "applicant_id": people.young,
        "form": {"mailing_address": "x" * 17000},
    }
    response = client.post("/v1/applications", json=body, headers=HEADERS)
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
def test_no_valid_key_is_401(client: TestClient, people: People, headers: dict[str, str]) -> None:
    for method, path in (
        ("POST", "/v1/applications"),
        ("GET", "/v1/items"),
        ("GET", "/v1/applications/x"),
    ):
        response = client.request(
            method,
            path,
            headers=headers,
            json={"item": "elderly-allowance", "applicant_id": people.young},
        )
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


def test_unknown_application_is_404(client: TestClient) -> None:
    response = client.get("/v1/applications/does-not-exist", headers=HEADERS)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_openapi_has_a_valid_worked_example_per_item(client: TestClient) -> None:
    from data_lookups.id_numbers import validate_id_number

    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/applications"]["post"]["requestBody"]["content"]["application/json"]
    examples = body["examples"]
    items = {i["item"] for i in client.get("/v1/items", headers=HEADERS).json()["items"]}
    assert {e["value"]["item"] for e in examples.values()} == items
    for example in examples.values():
        validate_id_number(example["value"]["applicant_id"])
