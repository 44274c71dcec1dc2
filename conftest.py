"""Root fixtures: a real PostgreSQL database and a real Redis namespace per test run.

The run creates its own PostgreSQL database and drops it at the end; Redis keys
live under a per-run prefix that is deleted at the end. Both servers must be up
(``.ci/run`` starts them); a test that needs one fails loudly when it is down.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator

import pytest

PG_ADMIN_URL = os.environ.get(
    "MIAOPI_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("MIAOPI_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database that exists for this test run only."""
    import psycopg

    name = f"miaopi_test_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database(pg_url: str) -> Iterator[Callable[[str], str]]:
    """Make more databases beside the run's own (``pg_database("api")``); all dropped at the end."""
    import psycopg

    base, run_name = pg_url.rsplit("/", 1)
    made: list[str] = []

    def make(suffix: str) -> str:
        name = f"{run_name}_{suffix}"
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{base}/{name}"

    yield make
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis used by tests; pair it with ``redis_prefix``."""
    return REDIS_TEST_URL


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test run; every key under it is deleted at the end."""
    import redis

    prefix = f"miaopi-test-{os.getpid()}-{secrets.token_hex(4)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=prefix + "*", count=1000):
        client.delete(key)
    client.close()
