"""Fifty simultaneous applications for one person: exactly one issuance, 49 correct rejections."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date

import httpx
import pytest
from sqlalchemy import text

from approval_service.api.main import create_app
from approval_service.service.container import Container
from data_lookups.database import write_transaction
from data_lookups.id_numbers import make_id_number

from .conftest import HEADERS
from .server import serving

RACERS = 50


def add_person(container: Container, id_number: str, birth: date) -> None:
    with write_transaction(container.engine) as conn:
        conn.execute(
            text(
                "INSERT INTO population"
                " (id_number, name, gender, birth_date, hukou_region, status) "
                "VALUES (:i, '并发', 'M', :b, '341602', 'alive')"
            ),
            {"i": id_number, "b": birth},
        )
        conn.execute(
            text("INSERT INTO photos (id_number, photo_sha256) VALUES (:i, :s)"),
            {"i": id_number, "s": "cd" * 32},
        )
        conn.execute(
            text(
                "INSERT INTO fact_versions (id_number, version) VALUES (:i, 1) "
                "ON CONFLICT (id_number) DO UPDATE SET version = fact_versions.version + 1"
            ),
            {"i": id_number},
        )


@pytest.mark.parametrize(
    ("item", "code", "table"),
    [
        ("senior-card-new", "CARD_ALREADY_VALID", "senior_cards"),
        ("elderly-allowance", "ALREADY_RECEIVING", "allowances"),
    ],
)
def test_fifty_racing_applications_issue_once(
    container: Container, item: str, code: str, table: str
) -> None:
    assert container.engine.dialect.name == "postgresql"
    applicant = make_id_number(
        "341602", date(1940, 4, 4), 801 if item == "elderly-allowance" else 803
    )
    add_person(container, applicant, date(1940, 4, 4))
    body = {"item": item, "applicant_id": applicant}
    if item == "senior-card-new":
        body["form"] = {"mailing_address": "亳州市谯城区"}
    with serving(create_app(container)) as url, httpx.Client(base_url=url, timeout=60) as http:
        http.get("/healthz")

        def fire(_: int) -> httpx.Response:
            return http.post("/v1/applications", json=body, headers=HEADERS)

        with ThreadPoolExecutor(RACERS) as pool:
            responses = list(pool.map(fire, range(RACERS)))
    assert [r.status_code for r in responses] == [201] * RACERS
    docs = [r.json() for r in responses]
    approved = [d for d in docs if d["decision"] == "approved"]
    rejected = [d for d in docs if d["decision"] == "rejected"]
    assert len(approved) == 1 and len(rejected) == RACERS - 1
    assert all([r["code"] for r in d["reasons"]] == [code] for d in rejected)
    with container.engine.connect() as conn:
        issued = conn.execute(
            text(f"SELECT count(*) FROM {table} WHERE id_number = :i"), {"i": applicant}
        ).scalar()
        recorded = conn.execute(
            text("SELECT count(*) FROM applications WHERE applicant_id = :i AND item = :t"),
            {"i": applicant, "t": item},
        ).scalar()
    assert issued == 1 and recorded == RACERS
