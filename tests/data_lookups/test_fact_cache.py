"""The fact cache: warm reads, freshness after any registry change, races, outages, stampedes."""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
import subprocess
import threading
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from registry_rows import new_id, person, write_jsonl
from sqlalchemy import Engine, text

from data_lookups.cache_stores import decode_entry, encode_entry
from data_lookups.database import write_transaction
from data_lookups.fact_cache import (
    CachedFactSource,
    FactCache,
    MemoryFactCache,
    PackedMemoryFactCache,
    RedisFactCache,
    TieredFactCache,
    make_fact_cache,
)
from data_lookups.facts import ALL_FACTS, Facts, SqlFactSource, Stamp
from data_lookups.importer import import_directory
from data_lookups.issuance import bump_versions, issue_card

D = date(2026, 11, 23)
PERSON = frozenset({"person", "cards", "fund"})


class CountingSource(SqlFactSource):
    """Counts full gathers (database reads of a bundle); optionally slow."""

    def __init__(self, engine: Engine, delay: float = 0.0) -> None:
        super().__init__(engine)
        self.gathers = 0
        self.delay = delay
        self._lock = threading.Lock()

    def gather_stamped(self, id_number: str, names: frozenset[str]) -> tuple[Stamp, Facts]:
        with self._lock:
            self.gathers += 1
        if self.delay:
            time.sleep(self.delay)
        return super().gather_stamped(id_number, names)


def _load(engine: Engine, directory: Path, *rows: dict[str, object]) -> None:
    write_jsonl(directory, "population.jsonl", list(rows))
    report = import_directory(engine, directory, today=D)
    assert report.ok, report.problems()


def test_warm_read_costs_no_gather(engine: Engine, cache: FactCache, tmp_path: Path) -> None:
    me = new_id()
    _load(engine, tmp_path, person(me))
    source = CountingSource(engine)
    cached = CachedFactSource(source, cache)
    first = cached.gather(me, PERSON)
    second = cached.gather(me, frozenset({"person"}))
    assert source.gathers == 1
    assert second == {"person": first["person"]}
    assert first == SqlFactSource(engine).gather(me, PERSON)


def test_import_in_another_process_is_seen_by_the_next_read(
    engine: Engine, cache: FactCache, tmp_path: Path
) -> None:
    me = new_id()
    _load(engine, tmp_path / "a", person(me))
    cached = CachedFactSource(SqlFactSource(engine), cache)
    assert cached.gather(me, PERSON)["person"]["status"] == "alive"  # type: ignore[index]
    # nobody tells the cache: the import only bumps the epoch in its transaction
    _load(engine, tmp_path / "b", person(me, status="deceased", death_date="2026-11-01"))
    assert cached.gather(me, PERSON)["person"]["status"] == "deceased"  # type: ignore[index]


def test_issuance_is_seen_by_the_next_read(
    engine: Engine, cache: FactCache, tmp_path: Path
) -> None:
    me = new_id()
    _load(engine, tmp_path, person(me))
    reader = CachedFactSource(SqlFactSource(engine), cache)
    assert reader.gather(me, PERSON)["cards"] == []
    with write_transaction(engine) as conn:
        card_no = issue_card(conn, me, "B", D, date(2031, 11, 23), "app-1")
    cards = reader.gather(me, PERSON)["cards"]
    assert [c["card_no"] for c in cards] == [card_no]  # type: ignore[attr-defined]
    reader.invalidate([me])  # optional hygiene, must not break anything
    assert reader.gather(me, PERSON)["cards"] == cards


def test_dropping_entries_from_the_event_loop_empties_every_tier(cache: FactCache) -> None:
    """``ainvalidate`` (the group writer's hook on the callers' loop) drops the entry
    from each tier, Redis included, and leaves the others alone."""
    bundle: Facts = {"cards": [], "retired_on": date(2020, 1, 1)}
    for someone in ("p", "q"):
        cache.put(someone, Stamp(1, 2), bundle)

    async def drop() -> None:
        await cache.ainvalidate(["p"])
        await cache.ainvalidate([])  # nothing to drop: no call at all
        if isinstance(cache, TieredFactCache | RedisFactCache):
            await cache.aclose()  # this loop's Redis client

    asyncio.run(drop())
    assert cache.peek("p") is None
    assert cache.peek("q") == (Stamp(1, 2), bundle)
    if isinstance(cache, TieredFactCache):
        assert cache.far.peek("p") is None and cache.near.peek("p") is None


def test_a_loop_whose_redis_client_was_closed_opens_no_other(
    redis_url: str, redis_prefix: str
) -> None:
    """A call that comes late on a loop whose client was closed (a hook still running at
    shutdown) is skipped, as when Redis is down, instead of opening a client nobody closes."""
    far = RedisFactCache(redis_url, prefix=f"{redis_prefix}closed:")
    far.put("p", Stamp(1, 1), {"cards": []})

    async def late() -> tuple[bytes | None, bytes | None, int]:
        before = await far.apeek_payload("p")
        await far.aclose()
        after = await far.apeek_payload("p")
        await far.ainvalidate(["p"])
        return before, after, len(far._async_clients)

    before, after, clients = asyncio.run(late())
    assert before is not None and after is None and clients == 0
    assert far.peek("p") is not None  # the late drop was skipped, not sent
    far.close()


def test_processes_sharing_redis(
    engine: Engine, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    me = new_id()
    _load(engine, tmp_path, person(me))
    prefix = f"{redis_prefix}shared:"
    one = CachedFactSource(CountingSource(engine), RedisFactCache(redis_url, prefix=prefix))
    two_source = CountingSource(engine)
    two = CachedFactSource(two_source, RedisFactCache(redis_url, prefix=prefix))
    one.gather(me, PERSON)
    assert two.gather(me, PERSON)["cards"] == [] and two_source.gathers == 0  # shared entry
    with write_transaction(engine) as conn:
        issue_card(conn, me, "B", D, date(2031, 11, 23), "app-1")
    assert len(two.gather(me, PERSON)["cards"]) == 1  # type: ignore[arg-type]


def test_no_stale_read_after_a_committed_update(engine: Engine, cache: FactCache) -> None:
    """Writers commit increasing values while readers read through the cache.

    A reader notes the newest value committed before its read began; the value it
    reads must never be older than that.
    """
    me = new_id()
    with write_transaction(engine) as conn:
        conn.execute(
            text(
                "INSERT INTO fund_accounts (id_number, account_no, status, balance, "
                "continuous_months, has_outstanding_loan) VALUES (:id, :id, 'normal', 0, 0, false)"
            ),
            {"id": me},
        )
        bump_versions(conn, [me])
    source = CountingSource(engine)
    cached = CachedFactSource(source, cache)
    committed = 0
    stale: list[tuple[int, int]] = []
    reads = 0
    stop = threading.Event()
    lock = threading.Lock()

    def write() -> None:
        nonlocal committed
        for value in range(1, 60):
            with write_transaction(engine) as conn:
                conn.execute(
                    text("UPDATE fund_accounts SET continuous_months = :v WHERE id_number = :id"),
                    {"v": value, "id": me},
                )
                bump_versions(conn, [me])
            committed = value  # after the commit returned
            before, deadline = reads, time.monotonic() + 1
            while reads < before + 4 and time.monotonic() < deadline:
                time.sleep(0.0005)  # let the readers hit the cache between commits
        stop.set()

    def read() -> None:
        nonlocal reads
        while not stop.is_set():
            floor = committed
            got = cached.gather(me, frozenset({"fund"}))["fund"]["continuous_months"]  # type: ignore[index]
            with lock:
                reads += 1
                if got < floor:
                    stale.append((floor, got))

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stale == []
    assert cached.gather(me, frozenset({"fund"}))["fund"]["continuous_months"] == 59  # type: ignore[index]
    assert source.gathers < reads  # the cache served a share of the reads


def test_cold_burst_sends_one_gather(engine: Engine, cache: FactCache, tmp_path: Path) -> None:
    me = new_id()
    _load(engine, tmp_path, person(me))
    source = CountingSource(engine, delay=0.2)
    cached = CachedFactSource(source, cache)
    barrier = threading.Barrier(16)
    results: list[Facts] = []

    def burst() -> None:
        barrier.wait()
        results.append(cached.gather(me, PERSON))

    threads = [threading.Thread(target=burst) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert source.gathers == 1
    assert len(results) == 16 and all(r == results[0] for r in results)


@pytest.mark.parametrize("kind", [MemoryFactCache, PackedMemoryFactCache])
def test_memory_cache_is_bounded_and_thread_safe(
    kind: type[MemoryFactCache | PackedMemoryFactCache],
) -> None:
    cache = kind(max_entries=50)
    bundle: Facts = {"retired_on": None}

    def churn(n: int) -> None:
        for i in range(2000):
            key = f"{n}-{i % 80}"
            cache.put(key, Stamp(0, i), bundle)
            cache.get(key, Stamp(0, i))
            cache.invalidate([f"{n}-{(i + 3) % 80}"])

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache._entries) <= 50
    cache.put("x", Stamp(1, 2), bundle)
    cache.put("x", Stamp(1, 1), {"retired_on": date(2020, 1, 1)})  # older: ignored
    assert cache.get("x", Stamp(1, 2)) == bundle and cache.get("x", Stamp(1, 1)) is None


def test_redis_entry_round_trips_types(redis_url: str, redis_prefix: str) -> None:
    cache = RedisFactCache(redis_url, prefix=f"{redis_prefix}types:")
    bundle: Facts = {
        "fund": {
            "account_no": "G",
            "status": "normal",
            "balance": Decimal("0.10"),
            "continuous_months": 3,
            "has_outstanding_loan": False,
            "last_rent_withdrawal_date": date(2024, 2, 29),
            "retirement_category": None,
        },
        "cards": [],
        "retired_on": date(2020, 1, 1),
    }
    cache.put("p", Stamp(3, 4), bundle)
    assert cache.get("p", Stamp(3, 4)) == bundle
    assert cache.get("p", Stamp(3, 5)) is None and cache.get("q", Stamp(3, 4)) is None
    assert isinstance(make_fact_cache(None), MemoryFactCache)
    tiered = make_fact_cache(redis_url, prefix=f"{redis_prefix}types:")
    assert isinstance(tiered, TieredFactCache) and isinstance(tiered.far, RedisFactCache)
    assert tiered.get("p", Stamp(3, 4)) == bundle  # from Redis, now also near
    assert tiered.near.get("p", Stamp(3, 4)) == bundle
    tiered.invalidate(["p"])
    assert tiered.get("p", Stamp(3, 4)) is None
    tiered.close()


def test_near_tier_keeps_entries_as_redis_stores_them(redis_url: str, redis_prefix: str) -> None:
    """Packed: bytes the garbage collector never scans, kept as Redis sent them."""
    far = RedisFactCache(redis_url, prefix=f"{redis_prefix}packed:")
    tiered = TieredFactCache(PackedMemoryFactCache(), far)
    card = {"card_no": "A1", "card_type": "senior", "status": "valid"}
    card |= {"issued_on": date(2025, 1, 2), "expires_on": date(2030, 1, 1)}
    card |= {"cancel_reason": None, "cancelled_on": None}
    bundle: Facts = {"cards": [card], "retired_on": date(2020, 1, 1)}
    far.put("p", Stamp(1, 7), bundle)
    assert tiered.peek("p") == (Stamp(1, 7), bundle)  # from Redis, now near as well
    kept = tiered.near.peek_payload("p")
    assert kept == far.peek_payload("p") and isinstance(kept, bytes)
    first, second = tiered.near.peek("p"), tiered.near.peek("p")
    assert first is not None and second is not None
    first[1]["cards"].clear()  # each read is decoded afresh: a caller's change stays its own
    assert second[1] == bundle and tiered.get("p", Stamp(1, 7)) == bundle
    tiered.put("q", Stamp(1, 1), bundle)  # encoded once, the same bytes in both tiers
    assert tiered.near.peek_payload("q") == far.peek_payload("q")
    tiered.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


def test_redis_going_away_and_coming_back(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    me = new_id()
    _load(engine, tmp_path, person(me))
    port = _free_port()
    proc = _start_redis(port)
    try:
        source = CountingSource(engine)
        cache = RedisFactCache(f"redis://127.0.0.1:{port}/0", retry_after=0.2, timeout=0.2)
        cached = CachedFactSource(source, cache)
        expected = cached.gather(me, PERSON)
        cached.gather(me, PERSON)
        assert source.gathers == 1
        _stop(proc)
        caplog.set_level(logging.WARNING, logger="data_lookups.cache_stores")
        for _ in range(5):  # the database keeps answering
            assert cached.gather(me, PERSON) == expected
        assert source.gathers == 6
        warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(warnings) == 1 and me not in caplog.text
        proc = _start_redis(port)
        time.sleep(0.25)
        cached.gather(me, PERSON)  # reconnects, stores again
        cached.gather(me, PERSON)
        assert source.gathers == 7
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        _stop(proc)


def test_unreadable_or_refused_redis_entries_are_misses(redis_url: str, redis_prefix: str) -> None:
    cache = RedisFactCache(redis_url, prefix=f"{redis_prefix}junk:")
    raw = redis.Redis.from_url(redis_url)
    raw.set(f"{redis_prefix}junk:facts:p", b"not json")
    assert cache.get("p", Stamp(0, 0)) is None
    raw.set(f"{redis_prefix}junk:facts:p", b'{"s": [0, 0], "f": {"nope": 1}}')
    assert cache.get("p", Stamp(0, 0)) is None
    raw.close()
    broken = RedisFactCache(redis_url, prefix=f"{redis_prefix}junk:")
    broken._client.get = _refuse  # type: ignore[method-assign]
    assert broken.get("p", Stamp(0, 0)) is None  # e.g. a replica answering READONLY


def _refuse(*_args: object, **_kwargs: object) -> object:
    raise redis.ResponseError("READONLY You can't write against a read only replica.")


def test_no_stale_read_across_cache_clients_during_imports(
    engine: Engine, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """As above, through the import path (epoch), each reader with its own Redis client
    (as separate service processes would be)."""
    me = new_id()
    start = date(2026, 1, 1)
    _load(engine, tmp_path / "0", person(me, last_seen_date=start.isoformat()))
    prefix = f"{redis_prefix}race-import:"
    committed = 0
    stale: list[tuple[int, int]] = []
    gathers: list[CountingSource] = []
    reads = 0
    stop = threading.Event()
    lock = threading.Lock()

    def write() -> None:
        nonlocal committed
        for day in range(1, 25):
            seen = date.fromordinal(start.toordinal() + day).isoformat()
            _load(engine, tmp_path / str(day), person(me, last_seen_date=seen))
            committed = day
            before, deadline = reads, time.monotonic() + 2
            while reads < before + 6 and time.monotonic() < deadline:
                time.sleep(0.001)  # let the readers hit the cache between imports
        stop.set()

    def read() -> None:
        nonlocal reads
        source = CountingSource(engine)
        cached = CachedFactSource(source, RedisFactCache(redis_url, prefix=prefix))
        gathers.append(source)
        while not stop.is_set():
            floor = committed
            seen = cached.gather(me, frozenset({"person"}))["person"]["last_seen_date"]  # type: ignore[index]
            got = seen.toordinal() - start.toordinal()
            with lock:
                reads += 1
                if got < floor:
                    stale.append((floor, got))

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stale == []
    assert sum(s.gathers for s in gathers) < reads


def test_changing_returned_facts_does_not_change_the_cache(
    engine: Engine, cache: FactCache, tmp_path: Path
) -> None:
    me = new_id()
    _load(engine, tmp_path, person(me))
    cached = CachedFactSource(SqlFactSource(engine), cache)
    first = cached.gather(me, PERSON)
    first["person"]["name"] = "changed"  # type: ignore[index]
    first["cards"].append({"card_no": "x"})  # type: ignore[attr-defined]
    again = cached.gather(me, PERSON)
    assert again["person"]["name"] == "张秀英" and again["cards"] == []  # type: ignore[index]


async def _closed(cached: CachedFactSource, cache: FactCache) -> None:
    """Close what this event loop opened: the miss reader's connection, Redis's client."""
    await cached.aclose()
    if isinstance(cache, TieredFactCache | RedisFactCache):
        await cache.aclose()


def test_an_application_gets_only_its_policys_facts_and_may_change_them(
    engine: Engine, cache: FactCache, tmp_path: Path
) -> None:
    """The hot path (``agather_unchecked``) gives exactly the facts asked for, on a miss
    and on a hit, in every kind of cache; what it returns is the caller's own."""
    me = new_id()
    _load(engine, tmp_path, person(me))
    cached = CachedFactSource(SqlFactSource(engine), cache)

    async def reads() -> list[tuple[Stamp, Facts]]:
        seen = []
        for _ in range(3):  # a miss, then hits
            stamp, facts = await cached.agather_unchecked(me, PERSON)
            seen.append((stamp, copy.deepcopy(facts)))  # as read, before the changes
            facts["person"]["name"] = "changed"  # type: ignore[index]
            facts["cards"].append({"card_no": "x"})  # type: ignore[attr-defined]
        await _closed(cached, cache)
        return seen

    seen = asyncio.run(reads())
    expected = SqlFactSource(engine).gather_stamped(me, PERSON)
    for stamp, facts in seen:
        assert (stamp, set(facts)) == (expected[0], PERSON)
    # each read got the facts as registered, not what the caller before changed
    assert seen[1][1]["person"]["name"] == seen[2][1]["person"]["name"] == "张秀英"  # type: ignore[index]
    assert cached.gather(me, PERSON) == expected[1]


def test_an_entry_without_a_fact_asked_for_is_read_again_and_put_whole(
    engine: Engine, cache: FactCache, tmp_path: Path
) -> None:
    """An entry put before a fact was in the catalogue: a miss on every path (checked,
    unchecked, on the event loop), not a KeyError, and the entry is put whole again in
    every tier."""
    me = new_id()
    _load(engine, tmp_path, person(me))
    source = SqlFactSource(engine)
    stamp, full = source.gather_stamped(me, ALL_FACTS)
    cached = CachedFactSource(source, cache)

    def short() -> None:
        cache.put(me, stamp, {"person": full["person"]})  # no cards, no fund

    def whole(c: FactCache) -> bool:
        entry = c.peek(me)
        return entry is not None and set(entry[1]) == ALL_FACTS

    async def on_the_loop() -> tuple[Stamp, Facts]:
        found = await cached.agather_unchecked(me, PERSON)
        await _closed(cached, cache)
        return found

    short()
    assert asyncio.run(on_the_loop()) == (stamp, {k: full[k] for k in PERSON})
    assert whole(cache)
    if isinstance(cache, TieredFactCache):
        assert whole(cache.near) and whole(cache.far)
    for read in (lambda: cached.gather(me, PERSON), lambda: cached.gather_unchecked(me, PERSON)[1]):
        short()
        assert read() == {k: full[k] for k in PERSON}
        assert whole(cache)


def test_decoding_only_some_facts_needs_only_those() -> None:
    stamp = Stamp(1, 0)
    payload = encode_entry(stamp, {"person": None, "retired_on": None})
    assert decode_entry(payload, frozenset({"person"})) == (stamp, {"person": None})
    assert decode_entry(payload, ["person", "cards"]) is None  # any collection of names
    broken = payload.replace(b'"retired_on":null', b'"retired_on":"not a date"')
    assert decode_entry(broken) is None  # the whole entry: unreadable
    assert decode_entry(broken, ["person"]) == (stamp, {"person": None})  # not looked at
