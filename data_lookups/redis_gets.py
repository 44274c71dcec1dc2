"""Grouped Redis reads for the event loop: the GETs of concurrent requests as one MGET.

Every request of a busy worker wants one cache entry. Sent one by one, each GET
costs a connection checkout, a round trip and redis-py's command machinery. Here
a request queues its key and waits; the first key queued since the last send
schedules one ``MGET`` for everything queued by the time it runs, so a burst of
requests shares a single command, and a lone request waits no longer than its
own GET would (the send is scheduled for the same loop iteration).
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis


class GroupedGets:
    """Batches GETs on one event loop into MGETs on one asyncio client."""

    def __init__(self, client: aioredis.Redis, max_keys: int = 512) -> None:
        self._client = client
        self._max_keys = max_keys
        self._waiting: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()  # referenced until done

    async def get(self, key: str) -> bytes | None:
        """The value of ``key`` (None if absent); raises what the MGET raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send)
        return await future

    def _send(self) -> None:
        self._scheduled = False
        while self._waiting:
            keys = list(self._waiting)[: self._max_keys]
            group = {key: self._waiting.pop(key) for key in keys}
            task = asyncio.ensure_future(self._mget(group))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _mget(self, group: dict[str, list[asyncio.Future[bytes | None]]]) -> None:
        try:
            values = await self._client.mget(list(group))
        except BaseException as error:  # every waiter learns it, then the caller decides
            for futures in group.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for futures, value in zip(group.values(), values, strict=True):
            for future in futures:
                if not future.done():
                    future.set_result(value.encode() if isinstance(value, str) else value)

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        """Store one value with an expiry, on the same client (not grouped)."""
        await self._client.set(key, value, ex=ttl_seconds)

    async def delete(self, keys: list[str]) -> None:
        """Delete keys, on the same client (not grouped)."""
        await self._client.delete(*keys)

    async def aclose(self) -> None:
        await self._client.aclose()
