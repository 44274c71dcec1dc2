"""The API on a real PostgreSQL database and a real Redis, with a hand-made registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from approval_service.api.main import create_app
from approval_service.service.clock import FixedClock
from approval_service.service.container import Container
from approval_service.settings import Settings
from data_lookups.database import ensure_schema, make_engine
from data_lookups.importer import import_directory

from .registry import TODAY, RegistryBuilder

KEY = "portal-key-1"
HEADERS = {"X-API-Key": KEY}
ZONE = ZoneInfo("Asia/Shanghai")


@dataclass
class People:
    elderly: str
    elderly_dead_elsewhere: str
    stranger: str
    senior: str
    senior_no_photo: str
    renter: str
    retiree: str
    certified: str
    unseen: str
    card_holder: str
    renewer: str
    racer: str
    young: str
    fund_holder_unregistered: str
    card_holder_no_photo: str
    renewer_no_photo: str


def build_registry(tmp: Path) -> tuple[Path, People]:
    r = RegistryBuilder()
    people = People(
        elderly=r.person(date(1941, 5, 1)),
        elderly_dead_elsewhere=r.person(date(1940, 1, 1), hukou="320102", status="deceased"),
        stranger=r.stranger(),
        senior=r.person(date(1960, 3, 3), region="341621"),
        senior_no_photo=r.person(date(1958, 1, 1), photo=False),
        renter=r.person(date(1990, 3, 15), region="341622"),
        retiree=r.person(date(1960, 5, 10), region="341623"),
        certified=r.person(date(1938, 2, 2), last_seen=date(2026, 10, 1)),
        unseen=r.person(date(1938, 3, 3), last_seen=date(2025, 1, 1)),
        card_holder=r.person(date(1950, 7, 7)),
        renewer=r.person(date(1955, 9, 9), hukou="340102"),
        racer=r.person(date(1952, 12, 12)),
        young=r.person(date(2000, 1, 1)),
        fund_holder_unregistered=r.stranger(),
        card_holder_no_photo=r.person(date(1949, 4, 4), photo=False),
        renewer_no_photo=r.person(date(1951, 5, 5), photo=False),
    )
    r.add(
        "fund_accounts.jsonl",
        id_number=people.fund_holder_unregistered,
        account_no="F003",
        status="normal",
        balance="800.00",
        continuous_months=24,
        has_outstanding_loan=False,
        last_rent_withdrawal_date=None,
        retirement_category="female55",
    )
    r.add(
        "senior_cards.jsonl",
        card_no="AH341600000003",
        id_number=people.card_holder_no_photo,
        card_type="B",
        status="valid",
        issued_on="2024-01-01",
        expires_on="2029-01-01",
        cancel_reason=None,
        cancelled_on=None,
    )
    r.add(
        "senior_cards.jsonl",
        card_no="AH341600000004",
        id_number=people.renewer_no_photo,
        card_type="A",
        status="valid",
        issued_on="2021-12-01",
        expires_on="2026-12-01",
        cancel_reason=None,
        cancelled_on=None,
    )
    r.add(
        "fund_accounts.jsonl",
        id_number=people.renter,
        account_no="F001",
        status="normal",
        balance="5000.00",
        continuous_months=12,
        has_outstanding_loan=False,
        last_rent_withdrawal_date=None,
        retirement_category="male60",
    )
    r.add(
        "fund_accounts.jsonl",
        id_number=people.retiree,
        account_no="F002",
        status="sealed",
        balance="1234.56",
        continuous_months=0,
        has_outstanding_loan=False,
        last_rent_withdrawal_date=None,
        retirement_category="male60",
    )
    for person in (people.certified, people.unseen):
        r.add(
            "allowances.jsonl",
            id_number=person,
            status="active",
            start_date="2020-01-01",
            monthly_amount="120.00",
        )
    r.add(
        "senior_cards.jsonl",
        card_no="AH341600000001",
        id_number=people.card_holder,
        card_type="A",
        status="valid",
        issued_on="2023-06-01",
        expires_on="2028-06-01",
        cancel_reason=None,
        cancelled_on=None,
    )
    r.add(
        "senior_cards.jsonl",
        card_no="AH341600000002",
        id_number=people.renewer,
        card_type="A",
        status="valid",
        issued_on="2021-12-31",
        expires_on="2026-12-31",
        cancel_reason=None,
        cancelled_on=None,
    )
    return r.write(tmp / "registry"), people


@pytest.fixture(scope="module")
def api_database(pg_database: Callable[[str], str], request: pytest.FixtureRequest) -> str:
    return pg_database(f"api_{request.module.__name__.rsplit('.', 1)[-1]}"[:40])


@pytest.fixture(scope="module")
def people_and_container(
    api_database: str, redis_url: str, redis_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[People, Container]]:
    directory, people = build_registry(tmp_path_factory.mktemp("api"))
    engine = make_engine(api_database)
    ensure_schema(engine)
    report = import_directory(engine, directory, today=TODAY)
    assert all(f.applied for f in report.files), report
    engine.dispose()
    settings = Settings(
        database_url=api_database,
        redis_url=redis_url,
        redis_prefix=f"{redis_prefix}api:",
        api_keys=f"portal:{KEY}",
    )
    clock = FixedClock(ZONE, datetime(2026, 11, 23, 10, 0, tzinfo=ZONE))
    container = Container.build(settings, clock=clock)
    yield people, container
    container.close()


@pytest.fixture(scope="module")
def people(people_and_container: tuple[People, Container]) -> People:
    return people_and_container[0]


@pytest.fixture(scope="module")
def container(people_and_container: tuple[People, Container]) -> Container:
    return people_and_container[1]


@pytest.fixture(scope="module")
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as test_client:
        yield test_client


def today() -> date:
    return TODAY
