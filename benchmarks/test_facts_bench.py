"""Fact gathering latency: cold from PostgreSQL, warm from Redis and from memory.

Each benchmark checks the result once, then times the call. The p99 of the
timed rounds is added to ``extra_info`` (``p99_ms``). Run with::

    .venv/bin/pytest benchmarks/test_facts_bench.py -p no:cacheprovider
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine

from data_lookups.cache_stores import copied_fact, decode_entry, encode_entry
from data_lookups.database import ensure_schema, make_engine
from data_lookups.fact_cache import (
    CachedFactSource,
    MemoryFactCache,
    RedisFactCache,
    make_fact_cache,
)
from data_lookups.facts import ALL_FACTS, SqlFactSource
from data_lookups.importer import import_directory
from data_lookups.synthetic import generate_registry

AS_OF = date(2026, 11, 23)
HOUSING = frozenset({"person", "fund", "properties", "spouse_properties", "retired_on"})


@pytest.fixture(scope="module")
def bench_engine(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """Its own PostgreSQL database holding a 5,000-resident synthetic registry."""
    base, name = pg_url.rsplit("/", 1)
    own = f"{name}_bench_{secrets.token_hex(2)}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{own}"')
    engine = make_engine(f"{base}/{own}")
    try:
        ensure_schema(engine)
        directory = tmp_path_factory.mktemp("bench-registry")
        generate_registry(directory, 5_000, seed=11, as_of=AS_OF)
        assert import_directory(engine, directory, today=AS_OF).ok
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{own}" WITH (FORCE)')


@pytest.fixture(scope="module")
def married_fund_holder(bench_engine: Engine) -> str:
    """Someone with a fund account and a spouse: the widest housing-fund gather."""
    with bench_engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT f.id_number FROM fund_accounts f JOIN marriages m USING (id_number) "
            "ORDER BY f.id_number LIMIT 1"
        ).one()
    return str(row[0])


def _run(benchmark: Any, fn: Callable[[], object]) -> None:
    benchmark.pedantic(fn, rounds=2000, iterations=1, warmup_rounds=50)
    data = sorted(benchmark.stats.stats.data) if benchmark.stats else []
    if data:
        benchmark.extra_info["p99_ms"] = round(data[int(len(data) * 0.99) - 1] * 1000, 3)


def test_gather_cold_postgres(
    benchmark: Any, bench_engine: Engine, married_fund_holder: str
) -> None:
    source = SqlFactSource(bench_engine)
    facts = source.gather(married_fund_holder, ALL_FACTS)
    assert facts["person"] is not None and facts["fund"] is not None
    _run(benchmark, lambda: source.gather(married_fund_holder, ALL_FACTS))


def test_gather_cold_postgres_housing_facts(
    benchmark: Any, bench_engine: Engine, married_fund_holder: str
) -> None:
    source = SqlFactSource(bench_engine)
    assert set(source.gather(married_fund_holder, HOUSING)) == HOUSING
    _run(benchmark, lambda: source.gather(married_fund_holder, HOUSING))


def test_stamp_read_postgres(
    benchmark: Any, bench_engine: Engine, married_fund_holder: str
) -> None:
    source = SqlFactSource(bench_engine)
    assert source.stamp(married_fund_holder).epoch >= 1
    _run(benchmark, lambda: source.stamp(married_fund_holder))


def test_gather_warm_redis(
    benchmark: Any,
    bench_engine: Engine,
    married_fund_holder: str,
    redis_url: str,
    redis_prefix: str,
) -> None:
    cache = RedisFactCache(redis_url, prefix=f"{redis_prefix}bench:")
    cached = CachedFactSource(SqlFactSource(bench_engine), cache)
    expected = SqlFactSource(bench_engine).gather(married_fund_holder, HOUSING)
    assert cached.gather(married_fund_holder, HOUSING) == expected
    assert cached.gather(married_fund_holder, HOUSING) == expected  # from Redis
    _run(benchmark, lambda: cached.gather(married_fund_holder, HOUSING))
    cache.close()


def test_gather_warm_memory(benchmark: Any, bench_engine: Engine, married_fund_holder: str) -> None:
    cached = CachedFactSource(SqlFactSource(bench_engine), MemoryFactCache())
    expected = SqlFactSource(bench_engine).gather(married_fund_holder, HOUSING)
    assert cached.gather(married_fund_holder, HOUSING) == expected
    _run(benchmark, lambda: cached.gather(married_fund_holder, HOUSING))


def test_gather_warm_tiered(
    benchmark: Any,
    bench_engine: Engine,
    married_fund_holder: str,
    redis_url: str,
    redis_prefix: str,
) -> None:
    """What the service runs with MIAOPI_REDIS_URL set: in-process tier, then Redis."""
    cache = make_fact_cache(redis_url, prefix=f"{redis_prefix}bench-tiered:")
    cached = CachedFactSource(SqlFactSource(bench_engine), cache)
    expected = SqlFactSource(bench_engine).gather(married_fund_holder, HOUSING)
    assert cached.gather(married_fund_holder, HOUSING) == expected
    _run(benchmark, lambda: cached.gather(married_fund_holder, HOUSING))


ELDERLY = frozenset({"person", "allowances", "low_income"})


@pytest.mark.parametrize("names", [ELDERLY, HOUSING], ids=["elderly-allowance", "housing"])
@pytest.mark.parametrize("way", ["all-then-copied", "only-those"])
def test_decode_a_cached_entry(
    benchmark: Any, bench_engine: Engine, married_fund_holder: str, way: str, names: frozenset[str]
) -> None:
    """An application's read of a kept entry: every fact decoded, then the policy's copied
    (before), against only the policy's facts decoded (``decode_entry(payload, names)``)."""
    source = SqlFactSource(bench_engine)
    payload = encode_entry(*source.gather_stamped(married_fund_holder, ALL_FACTS))

    def all_then_copied() -> object:
        entry = decode_entry(payload)
        assert entry is not None
        return {name: copied_fact(entry[1][name]) for name in names}

    def only_those() -> object:
        entry = decode_entry(payload, names)
        assert entry is not None
        return entry[1]

    read = all_then_copied if way == "all-then-copied" else only_those
    assert read() == source.gather(married_fund_holder, names)
    _run(benchmark, read)
