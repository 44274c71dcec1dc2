"""The fact cache: Redis when configured, in-process otherwise; never staler than the registry.

Freshness protocol (stamp-validated entries)
--------------------------------------------
Every registry change to a person bumps ``fact_versions.version`` for that person
*in the same transaction* (the issuance primitives do it themselves; see
:mod:`data_lookups.issuance`), and every import bumps ``registry_state.epoch`` in
the import's transaction. ``(epoch, version)`` is the person's :class:`Stamp`.

A cache entry holds a fact bundle together with the stamp it was read at, both
from the same database snapshot. There are two ways to read:

- :meth:`CachedFactSource.gather` (prechecks, explanations) checks before use:
  it reads the person's current stamp from the database (one primary-key
  lookup), uses the entry only if its stamp is equal, and otherwise gathers the
  bundle and its stamp from one snapshot and stores both;
- :meth:`CachedFactSource.gather_unchecked` (applications, the hot path) returns
  the entry as stored with its stamp and reads nothing else; the caller checks
  the stamp later. The group-commit writer does it for a whole group in one
  statement, under the people's locks, inside the transaction that records the
  decisions, and decides again on fresh facts where the stamp moved
  (:mod:`approval_service.service.applications`). So a warm application costs
  one cache read (Redis, or the in-process tier) and no database read before
  deciding.

Why no stale decision is possible: stamps only grow, and a committed change to a
person makes their stamp differ from every stamp read before the commit. A
stamp read after the commit (the check) sees the new stamp, and an entry carries
that stamp only if its bundle was read from a snapshot that already holds the
change. Writers need not reach the cache at all, so this holds across service
processes, for the import command running in another process, after a crash
between commit and invalidation, and when Redis was down during a write and
comes back with old entries. An entry written late with an old stamp can only
cause a miss (or a second decision), never a stale one. ``invalidate`` only
frees memory early.

The one obligation: every change to registry rows goes through the importer or
:mod:`data_lookups.issuance`, or calls :func:`data_lookups.issuance.bump_versions`
(or bumps ``registry_state.epoch``) in its own transaction. A hand-made SQL fix
that does neither is not seen until the entry expires (``DEFAULT_TTL_SECONDS``).

The price of a checked read is one small database read besides the cache read;
the saving is the full gather (nine tables). With Redis, a small in-process tier sits in
front (:class:`TieredFactCache`): also stamp-validated, it saves the network hop
and the decoding; Redis shares bundles between processes. Redis being down only costs speed: it is
skipped (one warning per outage, no personal data) and retried after a second.
A cold burst for one person sends one gather to the database per process
(single-flight per person and stamp).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any, Protocol

import orjson
import redis
import redis.asyncio as aioredis
from sqlalchemy import Engine

from approval_service.errors import CacheUnavailable
from data_lookups.facts import (
    ALL_FACTS,
    Facts,
    SqlFactSource,
    Stamp,
    check_names,
    decode_fact,
    encode_fact,
)
from data_lookups.redis_gets import GroupedGets

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 3600

#: a cached bundle and the stamp it was read at
Entry = tuple[Stamp, Facts]


class FactCache(Protocol):
    """Where fact bundles are kept, keyed by ID number and validated by stamp."""

    def get(self, id_number: str, stamp: Stamp) -> Facts | None:
        """The bundle stored for the person if it was read at ``stamp``, else None."""
        ...

    def peek(self, id_number: str) -> Entry | None:
        """Whatever bundle is stored for the person, with its stamp (the caller validates it)."""
        ...

    async def apeek(self, id_number: str) -> Entry | None:
        """:meth:`peek` for the event loop (Redis is read without blocking it)."""
        ...

    def put(self, id_number: str, stamp: Stamp, bundle: Facts) -> None: ...

    def invalidate(self, id_numbers: Iterable[str]) -> None:
        """Drop entries early (freshness never depends on it: stamps do)."""
        ...


class MemoryFactCache:
    """An in-process, thread-safe LRU of fact bundles."""

    def __init__(self, max_entries: int = 50_000) -> None:  # about 2 kB per person
        self._entries: OrderedDict[str, tuple[Stamp, Facts]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, id_number: str, stamp: Stamp) -> Facts | None:
        entry = self.peek(id_number)
        return None if entry is None or entry[0] != stamp else entry[1]

    def peek(self, id_number: str) -> Entry | None:
        with self._lock:
            entry = self._entries.get(id_number)
            if entry is not None:
                self._entries.move_to_end(id_number)  # recently used: evicted last
            return entry

    async def apeek(self, id_number: str) -> Entry | None:
        return self.peek(id_number)

    def put(self, id_number: str, stamp: Stamp, bundle: Facts) -> None:
        with self._lock:
            current = self._entries.get(id_number)
            if current is not None and current[0] > stamp:
                return  # keep the newer entry
            self._entries[id_number] = (stamp, bundle)
            self._entries.move_to_end(id_number)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def invalidate(self, id_numbers: Iterable[str]) -> None:
        with self._lock:
            for id_number in id_numbers:
                self._entries.pop(id_number, None)


def _encode_bundle(stamp: Stamp, bundle: Facts) -> bytes:
    facts = {name: encode_fact(name, value) for name, value in bundle.items()}
    return orjson.dumps({"s": list(stamp), "f": facts})


def _decode_entry(payload: bytes | str) -> Entry | None:
    """The stored entry; None if unreadable."""
    try:
        data = orjson.loads(payload)
        return Stamp(*data["s"]), {name: decode_fact(name, raw) for name, raw in data["f"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("fact cache: unreadable entry ignored")  # written by another version?
        return None


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
        entry = self.peek(id_number)
        return None if entry is None or entry[0] != stamp else entry[1]

    def peek(self, id_number: str) -> Entry | None:
        payload = self._call("get", self._key(id_number))
        return None if payload is None else _decode_entry(payload)

    async def apeek(self, id_number: str) -> Entry | None:
        if not self.available:
            return None
        try:
            payload = await self._grouped_gets().get(self._key(id_number))
        except (redis.RedisError, OSError) as error:
            self._failed(error)
            return None
        self._succeeded()
        return None if payload is None else _decode_entry(payload)

    async def aclose(self) -> None:
        """Close this event loop's client (call on the loop, before it ends)."""
        gets = self._async_clients.pop(asyncio.get_running_loop(), None)
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
        self._call("set", self._key(id_number), _encode_bundle(stamp, bundle), ex=self._ttl)

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

    def close(self) -> None:
        self._client.close()


class TieredFactCache:
    """A small in-process cache in front of a shared one (Redis).

    Both tiers validate by stamp, so the near tier can never be staler than the
    far one: it only saves the network hop and the decoding of the entry.
    """

    def __init__(self, near: MemoryFactCache, far: FactCache) -> None:
        self.near = near
        self.far = far

    def get(self, id_number: str, stamp: Stamp) -> Facts | None:
        bundle = self.near.get(id_number, stamp)
        if bundle is None:
            bundle = self.far.get(id_number, stamp)
            if bundle is not None:
                self.near.put(id_number, stamp, bundle)
        return bundle

    def peek(self, id_number: str) -> Entry | None:
        entry = self.near.peek(id_number)
        if entry is None:
            entry = self.far.peek(id_number)
            if entry is not None:
                self.near.put(id_number, *entry)
        return entry

    async def apeek(self, id_number: str) -> Entry | None:
        entry = self.near.peek(id_number)
        if entry is None:
            entry = await self.far.apeek(id_number)
            if entry is not None:
                self.near.put(id_number, *entry)
        return entry

    def put(self, id_number: str, stamp: Stamp, bundle: Facts) -> None:
        self.near.put(id_number, stamp, bundle)
        self.far.put(id_number, stamp, bundle)

    def invalidate(self, id_numbers: Iterable[str]) -> None:
        ids = list(id_numbers)
        self.near.invalidate(ids)
        self.far.invalidate(ids)

    async def aclose(self) -> None:
        closer = getattr(self.far, "aclose", None)
        if closer is not None:
            await closer()

    def close(self) -> None:
        closer = getattr(self.far, "close", None)
        if closer is not None:
            closer()


def make_fact_cache(
    redis_url: str | None, *, prefix: str = "miaopi:", near_entries: int = 20_000
) -> FactCache:
    """Redis (behind a small in-process tier) when a URL is configured, in-process otherwise."""
    if redis_url:
        return TieredFactCache(
            MemoryFactCache(near_entries), RedisFactCache(redis_url, prefix=prefix)
        )
    return MemoryFactCache()


def _copy(value: object) -> object:
    """A copy of a fact deep enough that a caller's change cannot reach the cache."""
    if isinstance(value, list):
        return [dict(record) for record in value]
    if isinstance(value, dict):
        return dict(value)
    return value  # dates, decimals, None: immutable


def make_fact_source(
    engine: Engine, redis_url: str | None, *, prefix: str = "miaopi:"
) -> CachedFactSource:
    """What the service uses: the registry database behind the configured cache."""
    return CachedFactSource(SqlFactSource(engine), make_fact_cache(redis_url, prefix=prefix))


class CachedFactSource:
    """A :class:`SqlFactSource` with a cache in front (see the module docstring).

    A cache entry holds the whole person bundle, so any policy's facts come from it.
    """

    def __init__(self, inner: SqlFactSource, cache: FactCache) -> None:
        self._inner = inner
        self.cache = cache
        self._flights: dict[tuple[str, Stamp | None], Future[Entry]] = {}
        self._flights_lock = threading.Lock()

    def gather(self, id_number: str, names: frozenset[str]) -> Facts:
        names = check_names(names)
        stamp = self._inner.stamp(id_number)
        bundle = self.cache.get(id_number, stamp)
        if bundle is None:
            bundle = self._load(id_number, stamp)[1]
        return {name: _copy(bundle[name]) for name in names}

    def gather_unchecked(self, id_number: str, names: frozenset[str]) -> tuple[Stamp, Facts]:
        """The facts as cached, with the stamp they were read at, without reading the stamp.

        The caller must compare that stamp with the person's current one before the
        facts count (the decision writer does it for a whole group in one statement,
        inside the transaction that records the decisions). On a miss the bundle is
        gathered from the database and cached.
        """
        names = check_names(names)
        entry = self.cache.peek(id_number)
        if entry is None:
            entry = self._load(id_number, None)
        return entry[0], {name: _copy(entry[1][name]) for name in names}

    async def agather_unchecked(self, id_number: str, names: frozenset[str]) -> tuple[Stamp, Facts]:
        """:meth:`gather_unchecked` on the event loop: Redis read without blocking it."""
        names = check_names(names)
        entry = await self.cache.apeek(id_number)
        if entry is None:
            entry = await asyncio.to_thread(self._load, id_number, None)
        return entry[0], {name: _copy(entry[1][name]) for name in names}

    def invalidate(self, id_numbers: Iterable[str]) -> None:
        self.cache.invalidate(id_numbers)

    def _load(self, id_number: str, stamp: Stamp | None) -> Entry:
        """Gather once per (person, stamp) in this process, however many threads ask."""
        key = (id_number, stamp)
        with self._flights_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = Future()
                self._flights[key] = flight
        if not leader:
            return flight.result()
        try:
            entry = self._inner.gather_stamped(id_number, ALL_FACTS)
            self.cache.put(id_number, *entry)
            flight.set_result(entry)
            return entry
        except BaseException as error:
            flight.set_exception(error)
            raise
        finally:
            with self._flights_lock:
                self._flights.pop(key, None)
