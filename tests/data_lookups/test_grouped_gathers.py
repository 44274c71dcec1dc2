"""Cache misses on the event loop: concurrent misses in one statement, entries exactly what
the registry gives, a lost connection read again, an outage told to every waiter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
from registry_rows import new_id, person, residents_of_every_shape, write_jsonl
from sqlalchemy import Engine

from approval_service.errors import RegistryUnavailable
from data_lookups.cache_stores import decode_entry
from data_lookups.fact_cache import (
    CachedFactSource,
    FactCache,
    RedisFactCache,
    TieredFactCache,
)
from data_lookups.facts import ALL_FACTS, SqlFactSource
from data_lookups.grouped_gathers import GroupedGathers
from data_lookups.importer import import_directory


@pytest.fixture
def residents(pg_engine: Engine, tmp_path: Path) -> dict[str, str]:
    return residents_of_every_shape(pg_engine, tmp_path)


def conninfo(engine: Engine) -> str:
    info = SqlFactSource(engine).async_conninfo
    assert info is not None
    return info


def test_concurrent_misses_are_one_statement_with_each_entry_what_the_registry_gives(
    pg_engine: Engine, residents: dict[str, str]
) -> None:
    ids = list(residents.values())  # the unregistered one too

    async def main() -> tuple[list[bytes], int]:
        gathers = GroupedGathers(conninfo(pg_engine))
        found = await asyncio.gather(*(gathers.entry(i) for i in [*ids, ids[0]]))  # a twin
        await gathers.aclose()
        return list(found), gathers.statements

    found, statements = asyncio.run(main())
    assert statements == 1
    source = SqlFactSource(pg_engine)
    for id_number, payload in zip([*ids, ids[0]], found, strict=True):
        assert decode_entry(payload) == source.gather_stamped(id_number, ALL_FACTS)


def test_a_lone_miss_goes_at_once_and_later_ones_wait_for_the_next_statement(
    pg_engine: Engine, residents: dict[str, str]
) -> None:
    first, *rest = residents.values()

    async def main() -> tuple[int, int]:
        gathers = GroupedGathers(conninfo(pg_engine))
        await gathers.entry(first)
        alone = gathers.statements
        leader = asyncio.ensure_future(gathers.entry(first))
        while not gathers._in_flight:  # its statement is on its way
            await asyncio.sleep(0)
        await asyncio.gather(leader, *(gathers.entry(i) for i in rest))
        await gathers.aclose()
        return alone, gathers.statements

    assert asyncio.run(main()) == (1, 3)  # one alone, then the leader, then the rest together


def test_a_miss_for_a_person_already_in_flight_joins_that_read(
    pg_engine: Engine, residents: dict[str, str]
) -> None:
    me = residents["rich"]

    async def main() -> tuple[bool, int]:
        gathers = GroupedGathers(conninfo(pg_engine))
        first = asyncio.ensure_future(gathers.entry(me))
        while not gathers._in_flight:
            await asyncio.sleep(0)
        second = await gathers.entry(me)
        same = second == await first
        await gathers.aclose()
        return same, gathers.statements

    assert asyncio.run(main()) == (True, 1)


def test_groups_are_split_at_max_ids(pg_engine: Engine, residents: dict[str, str]) -> None:
    ids = list(residents.values())

    async def main() -> int:
        gathers = GroupedGathers(conninfo(pg_engine), max_ids=2)
        found = await asyncio.gather(*(gathers.entry(i) for i in ids))
        assert [decode_entry(p) is not None for p in found] == [True] * len(ids)
        await gathers.aclose()
        return gathers.statements

    assert asyncio.run(main()) == 3  # 2 + 2 + 1


def test_a_lost_connection_is_read_again_on_a_fresh_one(
    pg_engine: Engine, residents: dict[str, str]
) -> None:
    me = residents["rich"]
    info = conninfo(pg_engine)

    async def main() -> tuple[bytes, bytes]:
        gathers = GroupedGathers(info)
        before = await gathers.entry(me)
        assert gathers._conn is not None
        pid = gathers._conn.info.backend_pid
        with psycopg.connect(info, autocommit=True) as admin:  # as a restart would
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        after = await gathers.entry(me)
        assert gathers._conn is not None and gathers._conn.info.backend_pid != pid
        await gathers.aclose()
        return before, after

    before, after = asyncio.run(main())
    assert before == after


def test_every_waiter_learns_that_the_registry_is_unreachable() -> None:
    async def main() -> list[BaseException | bytes]:
        gathers = GroupedGathers("postgresql://postgres@127.0.0.1:1/nowhere")
        found = await asyncio.gather(
            *(gathers.entry(new_id()) for _ in range(4)), return_exceptions=True
        )
        await gathers.aclose()
        return list(found)

    found = asyncio.run(main())
    assert len(found) == 4 and all(isinstance(f, RegistryUnavailable) for f in found)


def test_a_waiter_that_gives_up_does_not_cancel_the_others(
    pg_engine: Engine, residents: dict[str, str]
) -> None:
    me = residents["rich"]

    async def main() -> bytes:
        gathers = GroupedGathers(conninfo(pg_engine))
        quitter = asyncio.ensure_future(gathers.entry(me))
        stayer = asyncio.ensure_future(gathers.entry(me))
        await asyncio.sleep(0)
        quitter.cancel()
        payload = await stayer
        await gathers.aclose()
        return payload

    assert decode_entry(asyncio.run(main())) == SqlFactSource(pg_engine).gather_stamped(
        me, ALL_FACTS
    )


def test_an_event_loop_miss_is_read_once_and_kept_in_every_tier(
    engine: Engine, cache: FactCache, tmp_path: Path
) -> None:
    """On PostgreSQL the miss is read on the loop's connection, on SQLite in a thread;
    either way it is stored, so the next read of any tier needs no database."""
    me = new_id()
    write_jsonl(tmp_path, "population.jsonl", [person(me)])
    assert import_directory(engine, tmp_path).ok
    source = SqlFactSource(engine)
    cached = CachedFactSource(source, cache)
    expected = source.gather_stamped(me, ALL_FACTS)
    names = frozenset({"person", "cards"})

    async def main() -> tuple[object, object, int | None]:
        got = await cached.agather_unchecked(me, names)
        again = await cached.agather_unchecked(me, names)
        gathers = cached._gathers.get(asyncio.get_running_loop())
        statements = None if gathers is None else gathers.statements
        if isinstance(cache, TieredFactCache):
            assert cache.far.peek(me) == expected  # Redis has it too, for the other workers
        if isinstance(cache, TieredFactCache | RedisFactCache):
            await cache.aclose()  # this loop's Redis client
        await cached.aclose()
        return got, again, statements

    got, again, statements = asyncio.run(main())
    assert got == again == (expected[0], {n: expected[1][n] for n in names})
    assert statements == (1 if engine.dialect.name == "postgresql" else None)
    assert cache.peek(me) == expected


class Hanging(GroupedGathers):
    """A connection that never answers (a network partition without a reset)."""

    async def _fetch(self, conn: object, sql: str, params: dict[str, object]) -> list[object]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_a_statement_that_hangs_is_given_up_and_its_connection_dropped(
    pg_engine: Engine, residents: dict[str, str]
) -> None:
    async def main() -> tuple[list[BaseException | bytes], bool]:
        gathers = Hanging(conninfo(pg_engine), timeout=0.2)
        found = await asyncio.gather(
            *(gathers.entry(i) for i in residents.values()), return_exceptions=True
        )
        dropped = gathers._conn is None
        await gathers.aclose()
        return list(found), dropped

    found, dropped = asyncio.run(main())
    assert all(isinstance(f, RegistryUnavailable) for f in found) and dropped


def test_a_closed_reader_refuses_new_misses(pg_engine: Engine, residents: dict[str, str]) -> None:
    async def main() -> None:
        gathers = GroupedGathers(conninfo(pg_engine))
        await gathers.entry(residents["rich"])
        await gathers.aclose()
        with pytest.raises(RegistryUnavailable, match="shutting down"):
            await gathers.entry(residents["bare"])
        assert gathers._conn is None

    asyncio.run(main())


class Stalled(GroupedGathers):
    """A registry that never answers: the statement waits until it is cancelled."""

    async def _read(self, ids: list[str]) -> dict[str, bytes]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_a_loop_shutting_down_cancels_every_waiter_and_leaves_nothing_running() -> None:
    async def main() -> list[bool]:
        gathers = Stalled("postgresql://unused")
        first = asyncio.ensure_future(gathers.entry("a"))
        while not gathers._in_flight:
            await asyncio.sleep(0)
        later = asyncio.ensure_future(gathers.entry("b"))  # queued behind the stalled one
        await asyncio.sleep(0)
        assert gathers._task is not None
        gathers._task.cancel()
        done = await asyncio.wait_for(asyncio.gather(first, later, return_exceptions=True), 5)
        assert gathers._task is None and not gathers._queued and not gathers._in_flight
        return [isinstance(d, asyncio.CancelledError) for d in done]

    assert asyncio.run(main()) == [True, True]
