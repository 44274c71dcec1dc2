"""Database unreachable: 503 with Retry-After, nothing half-issued; back: no restart needed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from approval_service.api.main import create_app
from approval_service.service.clock import FixedClock
from approval_service.service.container import Container
from approval_service.settings import Settings
from data_lookups.database import write_transaction
from data_lookups.id_numbers import make_id_number

from .conftest import HEADERS, KEY, ZONE
from .proxy import Proxy


@pytest.fixture
def proxied(api_database: str, people_and_container: object) -> Iterator[tuple[Proxy, Container]]:
    parts = urlsplit(api_database)
    proxy = Proxy(parts.port or 5432)
    proxy.start()
    url = api_database.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    settings = Settings(database_url=url, redis_url=None, api_keys=f"portal:{KEY}")
    container = Container.build(
        settings, clock=FixedClock(ZONE, datetime(2026, 11, 23, 10, 0, tzinfo=ZONE))
    )
    yield proxy, container
    proxy.stop()
    container.close()


def test_outage_answers_503_and_recovers(
    proxied: tuple[Proxy, Container], container: Container
) -> None:
    proxy, outage_container = proxied
    applicant = make_id_number("341602", date(1941, 1, 1), 905)
    with write_transaction(container.engine) as conn:
        conn.execute(
            text(
                "INSERT INTO population"
                " (id_number, name, gender, birth_date, hukou_region, status) "
                "VALUES (:i, '断线', 'M', '1941-01-01', '341602', 'alive')"
            ),
            {"i": applicant},
        )
    body = {"item": "elderly-allowance", "applicant_id": applicant}
    with TestClient(create_app(outage_container)) as client:
        assert client.post("/v1/precheck", json=body, headers=HEADERS).status_code == 200
        proxy.stop()
        for path in ("/v1/applications", "/v1/precheck"):
            down = client.post(path, json=body, headers=HEADERS)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "registry_unavailable"
            assert down.headers["Retry-After"].isdigit()
        for path in (
            "/v1/applications/some-id",
            "/v1/review-queue",
            "/v1/stats?from=2026-11-01&to=2026-11-30",
        ):
            read = client.get(path, headers=HEADERS)
            assert read.status_code == 503, (path, read.text)
            assert read.headers["Retry-After"].isdigit()
        assert client.get("/readyz").status_code == 503
        proxy.start()
        up = client.post("/v1/applications", json=body, headers=HEADERS)
        assert up.status_code == 201 and up.json()["decision"] == "approved"
    with container.engine.connect() as conn:
        allowances = conn.execute(
            text("SELECT count(*) FROM allowances WHERE id_number = :i"), {"i": applicant}
        ).scalar()
        records = conn.execute(
            text("SELECT count(*) FROM applications WHERE applicant_id = :i"), {"i": applicant}
        ).scalar()
    assert (allowances, records) == (1, 1)
