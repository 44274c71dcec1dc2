"""Warming the fact cache: entries built by PostgreSQL equal what the registry gives, are
stamp-validated like any other, and failures are reported (``miaopi data warm``)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from registry_rows import new_id, person, residents_of_every_shape, write_jsonl
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from approval_service.cli.main import app
from approval_service.errors import CacheUnavailable, FactsError
from data_lookups.cache_warming import registry_ids, warm
from data_lookups.database import ensure_schema, make_engine, write_transaction
from data_lookups.fact_cache import DEFAULT_TTL_SECONDS, CachedFactSource, RedisFactCache
from data_lookups.facts import ALL_FACTS, Facts, SqlFactSource, Stamp, encode_fact
from data_lookups.importer import import_directory
from data_lookups.issuance import bump_versions, issue_card

D = date(2026, 11, 23)
CLOSED_REDIS = "redis://127.0.0.1:1/0"


class CountingSource(SqlFactSource):
    """Counts full gathers (database reads of a bundle)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.gathers = 0
        self._lock = threading.Lock()

    def gather_stamped(self, id_number: str, names: frozenset[str]) -> tuple[Stamp, Facts]:
        with self._lock:
            self.gathers += 1
        return super().gather_stamped(id_number, names)


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return f"{redis_prefix}warm-{secrets.token_hex(4)}:"


@pytest.fixture
def cache(redis_url: str, prefix: str) -> Iterator[RedisFactCache]:
    client = RedisFactCache(redis_url, prefix=prefix)
    yield client
    client.close()


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def stored_json(stamp: Stamp, facts: Facts) -> Any:
    """The entry as the cache stores it when it writes one itself (dates ISO, money text)."""
    return {"s": list(stamp), "f": {name: encode_fact(name, v) for name, v in facts.items()}}


def test_warmed_entries_are_what_the_registry_gives(
    pg_engine: Engine,
    cache: RedisFactCache,
    raw_redis: redis.Redis,
    prefix: str,
    tmp_path: Path,
) -> None:
    ids = residents_of_every_shape(pg_engine, tmp_path)
    order = list(ids.values())
    chunks: list[int] = []
    assert warm(pg_engine, cache, order, chunk=2, progress=chunks.append) == len(order)
    assert chunks == [2, 2, 1]
    source = SqlFactSource(pg_engine)
    for role, id_number in ids.items():
        expected = source.gather_stamped(id_number, ALL_FACTS)
        assert cache.peek(id_number) == expected, role
        raw = raw_redis.get(f"{prefix}facts:{id_number}")
        assert raw is not None and orjson.loads(raw) == stored_json(*expected), role
        assert 0 < raw_redis.ttl(f"{prefix}facts:{id_number}") <= DEFAULT_TTL_SECONDS
    entries = {role: cache.peek(i) for role, i in ids.items()}
    rich = entries["rich"]
    assert rich is not None
    assert rich[1]["fund"]["balance"] == Decimal("1234.50")  # type: ignore[index]
    assert str(rich[1]["fund"]["balance"]) == "1234.50"  # type: ignore[index]
    assert [c["card_no"] for c in rich[1]["cards"]] == [f"C{ids['rich']}1", f"C{ids['rich']}2"]  # type: ignore[attr-defined]
    assert rich[1]["retired_on"] == date(1999, 3, 1)
    assert len(rich[1]["spouse_properties"]) == 2  # type: ignore[arg-type]
    bare = entries["bare"]
    assert bare is not None and bare[0].version == 0
    assert bare[1]["allowances"] == [] and bare[1]["fund"] is None and bare[1]["photo"] is None
    versioned = entries["versioned"]
    assert versioned is not None and versioned[0].version >= 1
    assert versioned[1]["fund"]["last_rent_withdrawal_date"] == date(2024, 2, 29)  # type: ignore[index]
    unregistered = entries["unregistered"]
    assert unregistered is not None and unregistered[1]["person"] is None


def test_a_warmed_cache_serves_decisions_without_gathering(
    pg_engine: Engine, cache: RedisFactCache, tmp_path: Path
) -> None:
    ids = list(residents_of_every_shape(pg_engine, tmp_path).values())
    warm(pg_engine, cache, ids)
    source = CountingSource(pg_engine)
    cached = CachedFactSource(source, cache)
    for id_number in ids:
        cached.gather_unchecked(id_number, ALL_FACTS)
        cached.gather(id_number, frozenset({"person", "cards"}))
    assert source.gathers == 0


def _issued_a_card(conn: Any, id_number: str) -> None:
    issue_card(conn, id_number, "A", D, date(2031, 11, 23), None)


def _imported_again(engine: Engine, directory: Path, id_number: str) -> None:
    write_jsonl(
        directory,
        "population.jsonl",
        [person(id_number, status="deceased", death_date="2026-11-01")],
    )
    assert import_directory(engine, directory, today=D).ok


def _fixed_by_hand(conn: Any, id_number: str) -> None:
    conn.execute(
        text("UPDATE population SET hukou_region = '320102' WHERE id_number = :i"), {"i": id_number}
    )
    bump_versions(conn, [id_number])


CHANGES: dict[str, Callable[[Engine, Path, str], None]] = {
    "issuance": lambda engine, _, i: _in_transaction(engine, _issued_a_card, i),
    "import": _imported_again,
    "hand-fix-with-bump": lambda engine, _, i: _in_transaction(engine, _fixed_by_hand, i),
}


def _in_transaction(engine: Engine, change: Callable[[Any, str], None], id_number: str) -> None:
    with write_transaction(engine) as conn:
        change(conn, id_number)


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_person_changed_after_warming_is_stale_by_stamp(
    pg_engine: Engine, cache: RedisFactCache, tmp_path: Path, change: str
) -> None:
    me = new_id()
    write_jsonl(tmp_path / "before", "population.jsonl", [person(me)])
    assert import_directory(pg_engine, tmp_path / "before", today=D).ok
    warm(pg_engine, cache, [me])
    source = SqlFactSource(pg_engine)
    warmed = cache.peek(me)
    assert warmed is not None and warmed[0] == source.stamp(me)
    CHANGES[change](pg_engine, tmp_path / "after", me)
    entry = cache.peek(me)
    assert entry == warmed  # nobody told the cache
    assert entry is not None and entry[0] != source.stamp(me)
    fresh = source.gather(me, ALL_FACTS)
    assert fresh != entry[1]
    assert CachedFactSource(source, cache).gather(me, ALL_FACTS) == fresh  # never the old one


def test_warming_from_sqlite_is_refused(sqlite_engine: Engine, cache: RedisFactCache) -> None:
    me = new_id()
    with pytest.raises(FactsError, match="PostgreSQL"):
        warm(sqlite_engine, cache, [me])
    assert cache.peek(me) is None


def test_warming_into_an_unreachable_redis_is_reported(registry_pg_url: str) -> None:
    """CacheUnavailable, and the engine's connection goes back to its pool in transaction
    mode (it once stayed in autocommit: the next import lost its temporary table)."""
    engine = make_engine(registry_pg_url, pool_size=1, max_overflow=0)  # one connection
    unreachable = RedisFactCache(CLOSED_REDIS, prefix="unreachable:", timeout=0.5)
    try:
        ensure_schema(engine)
        with pytest.raises(CacheUnavailable, match="Redis cannot be reached"):
            warm(engine, unreachable, [new_id()])
        me = new_id()
        with engine.connect() as conn:
            bump_versions(conn, [me])
            conn.rollback()
        with engine.connect() as conn:
            kept = conn.execute(
                text("SELECT count(*) FROM fact_versions WHERE id_number = :i"), {"i": me}
            ).scalar()
        assert kept == 0  # the rollback undid the write
    finally:
        unreachable.close()
        engine.dispose()


def test_registry_ids_in_id_order(sqlite_engine: Engine, tmp_path: Path) -> None:
    ids = [new_id() for _ in range(3)]
    write_jsonl(tmp_path, "population.jsonl", [person(i) for i in reversed(ids)])
    assert import_directory(sqlite_engine, tmp_path, today=D).ok
    assert registry_ids(sqlite_engine) == sorted(ids)
    assert registry_ids(sqlite_engine, limit=2) == sorted(ids)[:2]


# -- miaopi data warm ---------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture(scope="module")
def cli_registry(
    pg_database: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[str]]:
    """A database of its own, with exactly three residents."""
    url = pg_database("warm_cli")
    engine = make_engine(url)
    ensure_schema(engine)
    ids = sorted(new_id() for _ in range(3))
    directory = tmp_path_factory.mktemp("warm_cli")
    write_jsonl(directory, "population.jsonl", [person(i) for i in ids])
    assert import_directory(engine, directory, today=D).ok
    engine.dispose()
    return url, ids


@pytest.mark.parametrize(("limit", "warmed"), [(None, 3), (2, 2)])
def test_data_warm_command(
    cli_registry: tuple[str, list[str]],
    redis_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    limit: int | None,
    warmed: int,
) -> None:
    url, ids = cli_registry
    monkeypatch.setenv("MIAOPI_DATABASE_URL", url)
    monkeypatch.setenv("MIAOPI_REDIS_URL", redis_url)
    monkeypatch.setenv("MIAOPI_REDIS_PREFIX", prefix)
    args = ["data", "warm"] + ([] if limit is None else ["--limit", str(limit)])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"warmed {warmed} residents' facts" in result.output
    cache = RedisFactCache(redis_url, prefix=prefix)
    engine = make_engine(url)
    try:
        source = SqlFactSource(engine)
        for id_number in ids[:warmed]:
            assert cache.peek(id_number) == source.gather_stamped(id_number, ALL_FACTS)
        for id_number in ids[warmed:]:
            assert cache.peek(id_number) is None
    finally:
        cache.close()
        engine.dispose()


@pytest.mark.parametrize(
    ("database", "redis_env", "code", "message"),
    [
        pytest.param("postgres", None, 2, "MIAOPI_REDIS_URL is not set", id="no-redis-url"),
        pytest.param("postgres", CLOSED_REDIS, 1, "Redis cannot be reached", id="redis-down"),
        pytest.param("sqlite", "redis", 1, "reads the registry from PostgreSQL", id="sqlite"),
    ],
)
def test_data_warm_command_failures(
    cli_registry: tuple[str, list[str]],
    redis_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database: str,
    redis_env: str | None,
    code: int,
    message: str,
) -> None:
    url = cli_registry[0] if database == "postgres" else f"sqlite:///{tmp_path}/registry.sqlite3"
    monkeypatch.setenv("MIAOPI_DATABASE_URL", url)
    monkeypatch.setenv("MIAOPI_REDIS_PREFIX", prefix)
    if redis_env is None:
        monkeypatch.delenv("MIAOPI_REDIS_URL", raising=False)
    else:
        monkeypatch.setenv("MIAOPI_REDIS_URL", redis_url if redis_env == "redis" else redis_env)
    result = runner.invoke(app, ["data", "warm"])
    assert result.exit_code == code, result.output
    assert message in result.output
