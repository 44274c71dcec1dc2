"""Grouped Redis reads: concurrent GETs of one loop iteration go out as one MGET."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from data_lookups.redis_gets import GroupedGets


class CountingRedis(aioredis.Redis):
    """A real asyncio client that counts the MGETs it sends."""

    mgets: list[int]

    async def mget(self, keys: Any, *args: Any) -> Any:
        self.mgets.append(len(keys))
        return await super().mget(keys, *args)


def client(url: str) -> CountingRedis:
    made = CountingRedis.from_pool(aioredis.ConnectionPool.from_url(url))  # owns the pool
    assert isinstance(made, CountingRedis)
    made.mgets = []
    return made


@pytest.fixture
def stored(redis_url: str, redis_prefix: str) -> dict[str, bytes]:
    values = {f"{redis_prefix}gets:{i}": f"value {i}".encode() for i in range(20)}
    sync = redis.Redis.from_url(redis_url)
    sync.mset(values)
    sync.close()
    return values


def test_concurrent_gets_are_one_mget_with_each_answer_right(
    redis_url: str, redis_prefix: str, stored: dict[str, bytes]
) -> None:
    async def main() -> tuple[list[bytes | None], list[int]]:
        redis_client = client(redis_url)
        gets = GroupedGets(redis_client)
        keys = [*stored, f"{redis_prefix}gets:missing", next(iter(stored))]  # a miss, a twin
        found = await asyncio.gather(*(gets.get(k) for k in keys))
        await gets.aclose()
        return list(found), redis_client.mgets

    found, mgets = asyncio.run(main())
    assert found == [*stored.values(), None, next(iter(stored.values()))]
    assert mgets == [21]  # one command for 22 waiters (the twin asked once)


def test_a_lone_get_is_sent_at_once_and_later_ones_in_new_groups(
    redis_url: str, stored: dict[str, bytes]
) -> None:
    async def main() -> list[int]:
        redis_client = client(redis_url)
        gets = GroupedGets(redis_client)
        for key, value in list(stored.items())[:3]:
            assert await gets.get(key) == value
        await gets.aclose()
        return redis_client.mgets

    assert asyncio.run(main()) == [1, 1, 1]


def test_groups_are_split_at_max_keys(redis_url: str, stored: dict[str, bytes]) -> None:
    async def main() -> list[int]:
        redis_client = client(redis_url)
        gets = GroupedGets(redis_client, max_keys=8)
        found = await asyncio.gather(*(gets.get(k) for k in stored))
        assert list(found) == list(stored.values())
        await gets.aclose()
        return redis_client.mgets

    assert asyncio.run(main()) == [8, 8, 4]


def test_every_waiter_learns_that_redis_is_unreachable() -> None:
    async def main() -> list[BaseException | bytes | None]:
        gets = GroupedGets(aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.5))
        found = await asyncio.gather(*(gets.get(f"k{i}") for i in range(5)), return_exceptions=True)
        await gets.aclose()
        return list(found)

    found = asyncio.run(main())
    assert len(found) == 5
    assert all(isinstance(f, redis.ConnectionError) for f in found)
