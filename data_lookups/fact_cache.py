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
front (:class:`TieredFactCache`): also stamp-validated, it saves the network hop, and
keeps entries as bytes, out of the garbage collector's way
(:mod:`data_lookups.cache_stores`); Redis shares bundles between processes. Redis
being down only costs speed: it is skipped (one warning per outage, no personal data)
and retried after a second.
A cold burst for one person sends one gather to the database per process
(single-flight per person and stamp).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Collection, Iterable
from concurrent.futures import Future
from typing import Protocol

from sqlalchemy import Engine

from approval_service.errors import RegistryError
from data_lookups.cache_stores import (
    DEFAULT_TTL_SECONDS,
    Entry,
    MemoryFactCache,
    PackedMemoryFactCache,
    RedisFactCache,
    bundle_at,
    copied_facts,
    decode_entry,
    encode_entry,
    holds,
)
from data_lookups.facts import ALL_FACTS, Facts, SqlFactSource, Stamp, check_names
from data_lookups.grouped_gathers import GroupedGathers

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "CachedFactSource",
    "Entry",
    "FactCache",
    "MemoryFactCache",
    "PackedMemoryFactCache",
    "RedisFactCache",
    "TieredFactCache",
    "make_fact_cache",
    "make_fact_source",
]


class FactCache(Protocol):
    """Where fact bundles are kept, keyed by ID number and validated by stamp."""

    def get(self, id_number: str, stamp: Stamp) -> Facts | None:
        """The bundle stored for the person if it was read at ``stamp``, else None."""
        ...

    def peek(self, id_number: str) -> Entry | None:
        """Whatever bundle is stored for the person, with its stamp (the caller validates it)."""
        ...

    async def apeek(self, id_number: str, names: Collection[str] | None = None) -> Entry | None:
        """:meth:`peek` for the event loop (Redis is read without blocking it); with
        ``names``, the entry holds only those facts, the caller's own to change (None
        if it lacks one)."""
        ...

    def put(self, id_number: str, stamp: Stamp, bundle: Facts) -> None: ...

    async def aput_payload(self, id_number: str, entry: Entry, payload: bytes) -> None:
        """Store an entry that came encoded, from the event loop: ``payload`` is what
        :func:`decode_entry` read ``entry`` from (a store keeps whichever it keeps)."""
        ...

    def invalidate(self, id_numbers: Iterable[str]) -> None:
        """Drop entries early (freshness never depends on it: stamps do)."""
        ...

    async def ainvalidate(self, id_numbers: Iterable[str]) -> None:
        """:meth:`invalidate` for the event loop (Redis is written without blocking it)."""
        ...


class TieredFactCache:
    """A small in-process cache in front of a shared one (Redis).

    Both tiers validate by stamp, so the near tier can never be staler than the
    far one: it only saves the network hop. It keeps entries as Redis stores them
    (:class:`PackedMemoryFactCache`), so an entry read from Redis is kept as it came
    and one put is encoded once for both tiers.
    """

    def __init__(self, near: PackedMemoryFactCache, far: RedisFactCache) -> None:
        self.near = near
        self.far = far

    def get(self, id_number: str, stamp: Stamp) -> Facts | None:
        entry = self.near.peek(id_number)
        if entry is None or entry[0] != stamp:
            entry = self._kept(id_number, self.far.peek_payload(id_number))
        return bundle_at(entry, stamp)

    def peek(self, id_number: str) -> Entry | None:
        entry = self.near.peek(id_number)
        if entry is None:
            entry = self._kept(id_number, self.far.peek_payload(id_number))
        return entry

    async def apeek(self, id_number: str, names: Collection[str] | None = None) -> Entry | None:
        near = decode_entry(self.near.peek_payload(id_number), names)
        if near is not None:
            return near
        return self._kept(id_number, await self.far.apeek_payload(id_number), names)

    def _kept(
        self, id_number: str, payload: bytes | None, names: Collection[str] | None = None
    ) -> Entry | None:
        """The entry a payload from the far tier holds (``names`` of it, if given), now
        kept near too."""
        entry = decode_entry(payload, names)
        if entry is not None and payload is not None:
            self.near.put_payload(id_number, entry[0], payload)
        return entry

    def put(self, id_number: str, stamp: Stamp, bundle: Facts) -> None:
        payload = encode_entry(stamp, bundle)
        self.near.put_payload(id_number, stamp, payload)
        self.far.put_payload(id_number, payload)

    async def aput_payload(self, id_number: str, entry: Entry, payload: bytes) -> None:
        self.near.put_payload(id_number, entry[0], payload)
        await self.far.aput_payload(id_number, entry, payload)

    def invalidate(self, id_numbers: Iterable[str]) -> None:
        ids = list(id_numbers)
        self.near.invalidate(ids)
        self.far.invalidate(ids)

    async def ainvalidate(self, id_numbers: Iterable[str]) -> None:
        ids = list(id_numbers)
        self.near.invalidate(ids)
        await self.far.ainvalidate(ids)

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
            PackedMemoryFactCache(near_entries), RedisFactCache(redis_url, prefix=prefix)
        )
    return MemoryFactCache()


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
        self._conninfo = inner.async_conninfo
        self._gathers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupedGathers] = (
            weakref.WeakKeyDictionary()
        )

    def gather(self, id_number: str, names: frozenset[str]) -> Facts:
        names = check_names(names)
        stamp = self._inner.stamp(id_number)
        bundle = self.cache.get(id_number, stamp)
        if bundle is None or not holds(bundle, names):  # lacking one: a miss
            bundle = self._load(id_number, stamp)[1]
        return copied_facts(bundle, names)

    def gather_unchecked(self, id_number: str, names: frozenset[str]) -> tuple[Stamp, Facts]:
        """The facts as cached, with the stamp they were read at, without reading the stamp.

        The caller must compare that stamp with the person's current one before the
        facts count (the decision writer does it for a whole group in one statement,
        inside the transaction that records the decisions). On a miss the bundle is
        gathered from the database and cached.
        """
        names = check_names(names)
        entry = self.cache.peek(id_number)
        if entry is None or not holds(entry[1], names):  # lacking one: a miss
            entry = self._load(id_number, None)
        return entry[0], copied_facts(entry[1], names)

    async def agather_unchecked(self, id_number: str, names: frozenset[str]) -> tuple[Stamp, Facts]:
        """:meth:`gather_unchecked` on the event loop: neither the cache read nor a miss's
        gather blocks it (on PostgreSQL a miss is read on the loop's own connection,
        concurrent misses in one statement: :mod:`data_lookups.grouped_gathers`)."""
        names = check_names(names)
        entry = await self.cache.apeek(id_number, names)  # those facts only, ours
        if entry is not None:
            return entry
        entry = await self._aload(id_number)
        return entry[0], copied_facts(entry[1], names)

    async def _aload(self, id_number: str) -> Entry:
        gathers = self._loop_gathers()
        if gathers is None:  # SQLite: its reads block, so they go to a thread
            return await asyncio.to_thread(self._load, id_number, None)
        payload = await gathers.entry(id_number)
        entry = decode_entry(payload)
        if entry is None:
            raise RegistryError("the registry built a cache entry that cannot be read")
        await self.cache.aput_payload(id_number, entry, payload)
        return entry

    def _loop_gathers(self) -> GroupedGathers | None:
        """This event loop's reader of misses (its connection belongs to the loop)."""
        if self._conninfo is None:
            return None
        loop = asyncio.get_running_loop()
        gathers = self._gathers.get(loop)
        if gathers is None:
            gathers = self._gathers[loop] = GroupedGathers(self._conninfo)
        return gathers

    async def aclose(self) -> None:
        """Close what this event loop opened for misses (call on the loop, before it ends);
        the loop's misses are refused from now on, not read on a new connection."""
        gathers = self._gathers.get(asyncio.get_running_loop())
        if gathers is not None:
            await gathers.aclose()

    def invalidate(self, id_numbers: Iterable[str]) -> None:
        self.cache.invalidate(id_numbers)

    async def ainvalidate(self, id_numbers: Iterable[str]) -> None:
        await self.cache.ainvalidate(id_numbers)

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
