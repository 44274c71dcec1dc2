"""The service under test on both backends: PostgreSQL with the Redis fact cache, SQLite
with the in-process one; one container per test module. And, for the group statements'
own tests, a PostgreSQL engine per module."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine

from approval_service.service.applications import ApplicationService
from approval_service.service.clock import FixedClock
from approval_service.service.container import Container
from approval_service.service.group_recording import GroupRecorder
from approval_service.settings import Settings
from data_lookups.database import ensure_schema, make_engine

from .applicants import ROOT, ZONE
from .record_rows import NOW


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def container(
    request: pytest.FixtureRequest,
    pg_database: Callable[[str], str],
    redis_url: str,
    redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Container]:
    if request.param == "postgresql":
        settings = Settings(
            database_url=pg_database(module_name(request)),
            redis_url=redis_url,
            redis_prefix=f"{redis_prefix}{module_name(request)}:",
            rules_dir=ROOT / "rules",
        )
    else:
        folder = tmp_path_factory.mktemp(module_name(request))
        settings = Settings(
            database_url=f"sqlite:///{folder}/miaopi.sqlite3",
            redis_url=None,
            rules_dir=ROOT / "rules",
        )
    built = Container.build(settings, clock=FixedClock(ZONE, NOW))
    yield built
    built.close()


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest, pg_database: Callable[[str], str]) -> Iterator[Engine]:
    """A PostgreSQL database of the module's own, at the schema's head."""
    made = make_engine(pg_database(module_name(request)))
    ensure_schema(made)
    yield made
    made.dispose()


@pytest.fixture(scope="module")
def service(container: Container) -> ApplicationService:
    return ApplicationService(container)


@pytest.fixture(scope="module")
def recorder(container: Container) -> GroupRecorder:
    return GroupRecorder(container)


def module_name(request: pytest.FixtureRequest) -> str:
    return str(request.module.__name__).rsplit(".", 1)[-1]
