"""Fixtures for the data layer: registry engines on real PostgreSQL and SQLite, row helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from data_lookups.database import ensure_schema, make_engine
from data_lookups.fact_cache import (
    FactCache,
    MemoryFactCache,
    PackedMemoryFactCache,
    RedisFactCache,
    TieredFactCache,
)

REGISTRY_TABLES = (
    "population",
    "low_income",
    "allowances",
    "senior_cards",
    "photos",
    "fund_accounts",
    "properties",
    "marriages",
    "social_security",
    "fund_withdrawals",
    "fact_versions",
)


@pytest.fixture(scope="session")
def registry_pg_url(pg_url: str) -> Iterator[str]:
    """A PostgreSQL database of its own for the data-layer tests (they empty tables)."""
    admin, name = pg_url.rsplit("/", 1)
    own = f"{name}_dl"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{own}"')
    try:
        yield f"{admin}/{own}"
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{own}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_engine(registry_pg_url: str) -> Iterator[Engine]:
    engine = make_engine(registry_pg_url)
    ensure_schema(engine)
    yield engine
    engine.dispose()


def empty_registry(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"TRUNCATE {', '.join(REGISTRY_TABLES)}")
        else:
            for table in REGISTRY_TABLES:
                conn.exec_driver_sql(f"DELETE FROM {table}")


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/db/registry.sqlite3")
    ensure_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty registry on each backend."""
    if request.param == "postgresql":
        pg: Engine = request.getfixturevalue("pg_engine")
        empty_registry(pg)
        yield pg
    else:
        yield request.getfixturevalue("sqlite_engine")


@pytest.fixture(params=["memory", "redis", "tiered"])
def cache(request: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> Iterator[FactCache]:
    """Each kind of fact cache: in-process, Redis alone, in-process in front of Redis."""
    if request.param == "memory":
        yield MemoryFactCache()
        return
    prefix = f"{redis_prefix}{request.node.name}:"
    client = RedisFactCache(redis_url, prefix=prefix)
    yield client if request.param == "redis" else TieredFactCache(PackedMemoryFactCache(), client)
    client.close()
