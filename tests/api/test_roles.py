"""MIAOPI_OFFICER_CHANNELS: officers review and see statistics; portals read their own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from approval_service.api.main import create_app
from approval_service.service.container import Container

from .conftest import People

PORTAL = {"X-API-Key": "portal-k"}
OTHER = {"X-API-Key": "other-k"}
COUNTER = {"X-API-Key": "counter-k"}


@pytest.fixture
def roles_client(container: Container) -> Iterator[TestClient]:
    saved = container.settings
    container.settings = saved.model_copy(update={"officer_channels": "counter"})
    keys = {"portal-k": "portal", "other-k": "other", "counter-k": "counter"}
    try:
        with TestClient(create_app(container, api_keys=keys)) as client:
            yield client
    finally:
        container.settings = saved


def test_only_officers_review_and_see_statistics(roles_client: TestClient, people: People) -> None:
    referred = roles_client.post(
        "/v1/applications",
        headers=PORTAL,
        json={"item": "elderly-allowance", "applicant_id": people.stranger},
    ).json()
    assert referred["decision"] == "referred"
    review = {"decision": "rejected", "officer": "x", "reasons": [{"code": "C", "message": "m"}]}
    for path, method, body in (
        ("/v1/review-queue", "GET", None),
        ("/v1/stats?from=2026-11-01&to=2026-11-30", "GET", None),
        (f"/v1/applications/{referred['application_id']}/review", "POST", review),
    ):
        refused = roles_client.request(method, path, headers=PORTAL, json=body)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert roles_client.get("/v1/review-queue", headers=COUNTER).status_code == 200
    done = roles_client.post(
        f"/v1/applications/{referred['application_id']}/review", headers=COUNTER, json=review
    )
    assert done.status_code == 200 and done.json()["decision"] == "rejected"


def test_a_portal_reads_only_its_own_applications(roles_client: TestClient, people: People) -> None:
    mine = roles_client.post(
        "/v1/applications",
        headers=PORTAL,
        json={"item": "elderly-allowance", "applicant_id": people.young},
    ).json()
    url = f"/v1/applications/{mine['application_id']}"
    assert roles_client.get(url, headers=PORTAL).json() == mine
    assert roles_client.get(url, headers=OTHER).status_code == 404
    assert roles_client.get(url, headers=COUNTER).json() == mine
    # deciding stays open to every channel
    assert (
        roles_client.post(
            "/v1/precheck",
            headers=OTHER,
            json={"item": "elderly-allowance", "applicant_id": people.young},
        ).status_code
        == 200
    )
