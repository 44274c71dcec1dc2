"""Where fact bundles are kept: in process (decoded, or packed as bytes) and in Redis.

The freshness protocol that makes every store safe to read is in
:mod:`data_lookups.fact_cache`, which puts these stores together.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, Generic, TypeVar

import orjson
import redis
import redis.asyncio as aioredis

from approval_service.errors import CacheUnavailable
from data_lookups.facts import Facts, Stamp, decode_fact, encode_fact
from data_lookups.redis_gets import GroupedGets

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 3600

#: a cached bundle and the stamp it was read at
Entry = tuple[Stamp, Facts]
V = TypeVar("V")
R = TypeVar("R")


class _StampedLru(Generic[V]):
    """A thread-safe LRU of ``(stamp, value)`` per ID number that never goes back in time."""

    def __init__(self, max_entries: int) -> None:
        self._entries: OrderedDict[str, tuple[Stamp, V]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def _peek(self, id_number: str) -> tuple[Stamp, V] | None:
        with self._lock:
            entry = self._entries.get(id_number)
            if entry is not None:
                self._entries.move_to_end(id_number)  # recently used: evicted last
            return entry

    def _put(self, id_number: str, stamp: Stamp, value: V) -> None:
        with self._lock:
            current = self._entries.get(id_number)
            if current is not None and current[0] > stamp:
                return  # keep the newer entry
            self._entries[id_number] = (stamp, value)
            self._entries.move_to_end(id_number)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def invalidate(self, id_numbers: Iterable[str]) -> None:
        with self._lock:
            for id_number in id_numbers:
                self._entries.pop(id_number, None)

    async def ainvalidate(self, id_numbers: Iterable[str]) -> None:
        self.invalidate(id_numbers)  # in-process: nothing to wait for


class MemoryFactCache(_StampedLru[Facts]):
    """An in-process, thread-safe LRU of fact bundles (the cache when there is no Redis)."""

    def __init__(self, max_entries: int = 50_000) -> None:  # about 2 kB per person
        super().__init__(max_entries)

    def get(self, id_number: str, stamp: Stamp) -> Facts | None:
        return bundle_at(self.peek(id_number), stamp)

    def peek(self, id_number: str) -> Entry | None:
        return self._peek(id_number)

    async def apeek(self, id_number: str, names: Collection[str] | None = None) -> Entry | None:
        entry = self.peek(id_number)
        if entry is None or names is None:
            return entry
        if not holds(entry[1], names):  # put without one asked for: a miss
            return None
        return entry[0], copied_facts(entry[1], names)  # shared: copies

    def put(self, id_number: str, stamp: Stamp, bundle: Facts) -> None:
        self._put(id_number, stamp, bundle)

    async def aput_payload(self, id_number: str, entry: Entry, payload: bytes) -> None:
        """Keep an entry that came encoded (a miss read on the event loop), decoded."""
        self._put(id_number, *entry)


class PackedMemoryFactCache(_StampedLru[bytes]):
    """An in-process LRU of entries kept as the bytes Redis stores: the near tier.

    Decoded, a bundle is a few dozen containers that the garbage collector tracks;
    as bytes the entry is two small objects (its tuple and stamp) beside bytes the
    collector never scans. A worker under load puts
    about one new entry per application, each living until evicted, so decoded
    entries survived collection after collection of the younger generations: at
    2,000 applications/s those of the middle generation took about 100 ms each,
    every request in flight waiting (``gc.callbacks``; README "Load test"). An
    entry is decoded on each read instead, a few microseconds.
    """

    def __init__(self, max_entries: int = 20_000) -> None:
        super().__init__(max_entries)

    def peek_payload(self, id_number: str) -> bytes | None:
        entry = self._peek(id_number)
        return None if entry is None else entry[1]

    def put_payload(self, id_number: str, stamp: Stamp, payload: bytes) -> None:
        self._put(id_number, stamp, payload)

    async def aput_payload(self, id_number: str, entry: Entry, payload: bytes) -> None:
        self.put_payload(id_number, entry[0], payload)

    def get(self, id_number: str, stamp: Stamp) -> Facts | None:
        return bundle_at(self.peek(id_number), stamp)

    def peek(self, id_number: str) -> Entry | None:
        return decode_entry(self.peek_payload(id_number))

    async def apeek(self, id_number: str, names: Collection[str] | None = None) -> Entry | None:
        return decode_entry(self.peek_payload(id_number), names)

    def put(self, id_number: str, stamp: Stamp, bundle: Facts) -> None:
        self._put(id_number, stamp, encode_entry(stamp, bundle))


def encode_entry(stamp: Stamp, bundle: Facts) -> bytes:
    """An entry as Redis and the near tier keep it: JSON of the stamp and the facts."""
    facts = {name: encode_fact(name, value) for name, value in bundle.items()}
    return orjson.dumps({"s": list(stamp), "f": facts})


def decode_entry(payload: bytes | str | None, names: Collection[str] | None = None) -> Entry | None:
    """The stored entry, with only the facts ``names`` if given (decoding the others would
    be wasted: a policy reads a few of the nine, and a fact not asked for is not looked
    at, readable or not); None if there is none, it is unreadable or it lacks one of
    ``names`` (put before that fact was in the catalogue: a miss, which puts it whole).
    Each call decodes anew: what it returns is the caller's own."""
    if payload is None:
        return None
    try:
        data = orjson.loads(payload)
        stored = data["f"]
        if names is not None and not holds(stored, names):
            log.debug("fact cache: an entry without a fact asked for is a miss")
            return None
        wanted = stored if names is None else names
        return Stamp(*data["s"]), {name: decode_fact(name, stored[name]) for name in wanted}
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("fact cache: unreadable entry ignored")  # written by another version?
        return None


def holds(bundle: Mapping[str, object], names: Iterable[str]) -> bool:
    """Whether a bundle (or a stored entry's facts) has every fact of ``names``."""
    return all(name in bundle for name in names)


def copied_facts(bundle: Facts, names: Iterable[str]) -> Facts:
    """The facts ``names`` of a bundle, each :func:`copied_fact`."""
    return {name: copied_fact(bundle[name]) for name in names}


def copied_fact(value: object) -> object:
    """A copy of a fact deep enough that a caller's change cannot reach a shared one."""
    if isinstance(value, list):
        return [dict(record) for record in value]
    if isinstance(value, dict):
        return dict(value)
    return value  # dates, decimals, None: immutable


def bundle_at(entry: Entry | None, stamp: Stamp) -> Facts | None:
    """The entry's bundle if it was read at ``stamp``, else None."""
    return None if entry is None or entry[0] != stamp else entry[1]


class RedisFactCache:
    """Fact bundles in Redis under ``{prefix}facts:{id_number}``, shared by processes.

    Any Redis failure is logged once per outage and turns the cache off for
    ``retry_after`` seconds: reads miss and writes are skipped, so decisions
    keep coming from the database. The next attempt after that reconnects.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "miaopi:",
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        retry_after: float = 1.0,
        timeout: float = 0.5,
    ) -> None:
        self._url = url
        self._options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": 0,
        }
        self._client = redis.Redis.from_url(url, **self._options)
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupedGets] = (
            weakref.WeakKeyDictionary()
        )
        # loops whose client was closed: a late call there (a hook still running at
        # shutdown) is skipped rather than opening a client nobody would close
        self._closed_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._retry_after = retry_after
        self._down_until = 0.0
        self._down = False
        self._lock = threading.Lock()

    def _key(self, id_number: str) -> str:
        return f"{self._prefix}facts:{id_number}"

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> None:
        with self._lock:
            self._down_until = time.monotonic() + self._retry_after
            if not self._down:
                self._down = True
                log.warning(
                    "fact cache (Redis) unreachable, serving from the database: %s",
                    type(error).__name__,
                )

    def _succeeded(self) -> None:
        if self._down:
            with self._lock:
                if self._down:
                    self._down = False
                    log.warning("fact cache (Redis) reachable again")

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if not self.available:
            return None
        try:
            result = getattr(self._client, method)(*args, **kwargs)
        except (redis.RedisError, OSError) as error:  # a cache never fails a decision
            self._failed(error)
            return None
        self._succeeded()
        return result

    def get(self, id_number: str, stamp: Stamp) -> Facts | None:
        return bundle_at(self.peek(id_number), stamp)

    def peek(self, id_number: str) -> Entry | None:
        return decode_entry(self.peek_payload(id_number))

    async def apeek(self, id_number: str, names: Collection[str] | None = None) -> Entry | None:
        return decode_entry(await self.apeek_payload(id_number), names)

    def peek_payload(self, id_number: str) -> bytes | None:
        """The entry as stored (see :func:`decode_entry`), or None."""
        payload: bytes | None = self._call("get", self._key(id_number))
        return payload

    async def _acall(self, call: Callable[[GroupedGets], Awaitable[R]]) -> R | None:
        """:meth:`_call` for the event loop, on this loop's client (none once closed)."""
        if not self.available or asyncio.get_running_loop() in self._closed_loops:
            return None
        try:
            result = await call(self._grouped_gets())
        except (redis.RedisError, OSError) as error:  # a cache never fails a decision
            self._failed(error)
            return None
        self._succeeded()
        return result

    async def apeek_payload(self, id_number: str) -> bytes | None:
        return await self._acall(lambda gets: gets.get(self._key(id_number)))

    async def aclose(self) -> None:
        """Close this event loop's client (call on the loop, before it ends); the loop's
        later calls are skipped, as when Redis is down."""
        loop = asyncio.get_running_loop()
        self._closed_loops.add(loop)
        gets = self._async_clients.pop(loop, None)
        if gets is not None:
            await gets.aclose()

    def _grouped_gets(self) -> GroupedGets:
        """One asyncio client per event loop (its connections belong to the loop)."""
        loop = asyncio.get_running_loop()
        gets = self._async_clients.get(loop)
        if gets is None:
            gets = GroupedGets(aioredis.Redis.from_url(self._url, **self._options))
            self._async_clients[loop] = gets
        return gets

    def put(self, id_number: str, stamp: Stamp, bundle: Facts) -> None:
        self.put_payload(id_number, encode_entry(stamp, bundle))

    def put_payload(self, id_number: str, payload: bytes) -> None:
        self._call("set", self._key(id_number), payload, ex=self._ttl)

    async def aput_payload(self, id_number: str, entry: Entry, payload: bytes) -> None:
        """:meth:`put_payload` for the event loop (the stamp is inside the payload)."""
        await self._acall(lambda gets: gets.set(self._key(id_number), payload, self._ttl))

    def put_entries(self, entries: Iterable[tuple[str, str]]) -> None:
        """Store ready-made entries (``(id_number, entry JSON)``) with one pipeline.

        Unlike the other calls this one raises :class:`CacheUnavailable`: it is for
        warming the cache, where a Redis that cannot be reached is the news.
        """
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for id_number, payload in entries:
                    pipe.set(self._key(id_number), payload, ex=self._ttl)
                pipe.execute()
        except (redis.RedisError, OSError) as error:
            raise CacheUnavailable(f"Redis cannot be reached: {type(error).__name__}") from error

    def invalidate(self, id_numbers: Iterable[str]) -> None:
        keys = [self._key(i) for i in id_numbers]
        if keys:
            self._call("delete", *keys)

    async def ainvalidate(self, id_numbers: Iterable[str]) -> None:
        """:meth:`invalidate` for the event loop, on this loop's client."""
        keys = [self._key(i) for i in id_numbers]
        if keys:
            await self._acall(lambda gets: gets.delete(keys))

    def close(self) -> None:
        self._client.close()
