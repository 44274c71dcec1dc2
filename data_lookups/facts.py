"""Fact assembly: the catalogue's facts for one person, from the registry database.

``FactSource.gather(id_number, names)`` returns exactly the names asked for, in
the shapes of :mod:`data_lookups.catalogue`:

- ``record?`` facts (``person``, ``photo``, ``fund``): a dict of the catalogue's
  fields, or ``None`` when the registry has no row;
- ``list`` facts (``low_income``, ``allowances``, ``cards``, ``properties``,
  ``spouse_properties``): a list of such dicts, possibly empty, in a stable order
  (cards by ``issued_on``, allowances by ``start_date``);
- ``retired_on``: a ``date`` or ``None``.

Values are ``datetime.date``, ``decimal.Decimal`` (money), ``int``, ``bool`` and
``str``. Each call returns its own dicts and lists (the cache keeps its copy).

:class:`SqlFactSource` reads everything asked for, together with the person's
:class:`Stamp`, from one snapshot: on PostgreSQL a single statement (one round
trip) that builds the records as JSON; on SQLite a few statements in one read
transaction (in-process, no round trips).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

import orjson
import psycopg
from sqlalchemy import Connection, Engine, bindparam, exc, text

from approval_service.errors import FactsError, RegistryUnavailable
from data_lookups.catalogue import FACTS
from data_lookups.database import is_postgres, unavailable_as_registry_error

Facts = dict[str, object]

#: every fact the catalogue defines; what a cache entry holds
ALL_FACTS: frozenset[str] = frozenset(FACTS)


class Stamp(NamedTuple):
    """The registry state of one person: import epoch and personal version.

    Every change to the person's rows bumps ``version`` in the same transaction;
    every import bumps ``epoch``. Two equal stamps mean equal facts.
    """

    epoch: int
    version: int


class FactSource(Protocol):
    """Anything that can gather facts for a person (a database, a cache in front of one)."""

    def gather(self, id_number: str, names: frozenset[str]) -> Facts: ...


# fact -> (table, WHERE clause on :id, ORDER BY or None)
_QUERIES: dict[str, tuple[str, str, str | None]] = {
    "person": ("population", "id_number = :id", None),
    "low_income": ("low_income", "id_number = :id", "since"),
    "allowances": ("allowances", "id_number = :id", "start_date, id"),
    "cards": ("senior_cards", "id_number = :id", "issued_on, card_no"),
    "photo": ("photos", "id_number = :id", None),
    "fund": ("fund_accounts", "id_number = :id", None),
    "properties": ("properties", "id_number = :id", "property_id"),
    "spouse_properties": (
        "properties",
        "id_number = (SELECT spouse_id_number FROM marriages WHERE id_number = :id)",
        "property_id",
    ),
    "retired_on": ("social_security", "id_number = :id", None),
}
_STAMP_SQL = (
    "SELECT (SELECT epoch FROM registry_state WHERE id = 1), "
    "(SELECT version FROM fact_versions WHERE id_number = :id)"
)
_PG_STAMP_SQL = _STAMP_SQL.replace(":id", "%(id)s")
# the epoch under a key no ID number can have, then every listed person's version
_STAMPS_SQL = text(
    "SELECT '', epoch FROM registry_state WHERE id = 1 "
    "UNION ALL SELECT id_number, version FROM fact_versions WHERE id_number IN :ids"
).bindparams(bindparam("ids", expanding=True))
PG_STAMPS_SQL = (
    "SELECT '', epoch FROM registry_state WHERE id = 1 "
    "UNION ALL SELECT id_number, version FROM fact_versions "
    "WHERE id_number = ANY(string_to_array(%(ids)s, ','))"
)
_UNAVAILABLE = "the registry database cannot be reached; retry later"


def _to_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(value)


def _to_money(value: Any) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, float):  # SQLite stores NUMERIC as REAL; 14 digits survive exactly
        return Decimal(f"{value:.2f}")
    return Decimal(value).quantize(Decimal("0.01"))


def _to_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _to_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _to_text(value: Any) -> str | None:
    return None if value is None else str(value)


_CONVERTERS: dict[str, Callable[[Any], object]] = {
    "date": _to_date,
    "money": _to_money,
    "bool": _to_bool,
    "int": _to_int,
    "text": _to_text,
}


def _fields(name: str) -> list[tuple[str, Callable[[Any], object]]]:
    return [(f, _CONVERTERS[t.rstrip("?")]) for f, t in FACTS[name][1].items()]


_FIELDS = {name: _fields(name) for name in FACTS}


def decode_record(name: str, raw: dict[str, Any]) -> dict[str, object]:
    """A record of fact ``name`` with catalogue types, from JSON-ish or database values."""
    return {f: conv(raw.get(f)) for f, conv in _FIELDS[name]}


def decode_fact(name: str, raw: Any) -> object:
    """One fact's value with catalogue types (``raw`` as read from JSON or the database)."""
    shape = FACTS[name][0]
    if shape == "list":
        return [decode_record(name, r) for r in (raw or [])]
    if shape == "record?":
        return None if raw is None else decode_record(name, raw)
    return _CONVERTERS[shape.rstrip("?")](raw)


def encode_fact(name: str, value: object) -> object:
    """The JSON-friendly form of a fact (dates ISO, money strings); :func:`decode_fact` inverts."""
    shape = FACTS[name][0]
    if shape == "list":
        return [_encode_record(r) for r in value]  # type: ignore[attr-defined]
    if shape == "record?":
        return None if value is None else _encode_record(value)  # type: ignore[arg-type]
    return _encode_value(value)


def _encode_record(record: dict[str, object]) -> dict[str, object]:
    return {k: _encode_value(v) for k, v in record.items()}


def _encode_value(value: object) -> object:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def check_names(names: Iterable[str]) -> frozenset[str]:
    names = frozenset(names)
    unknown = names - ALL_FACTS
    if unknown:
        raise FactsError(f"unknown facts {sorted(unknown)}; the catalogue has {sorted(FACTS)}")
    return names


def _pg_json(name: str, as_text: bool = True) -> str:
    """A subselect of fact ``name`` for the person ``:id``, as JSON (text, or json values)."""
    table, where, order = _QUERIES[name]
    shape, fields = FACTS[name]
    if shape not in ("list", "record?"):
        return f"(SELECT {name} FROM {table} WHERE {where})"
    cast = {"money": "::text"}
    pairs = ", ".join(f"'{f}', {f}{cast.get(t.rstrip('?'), '')}" for f, t in fields.items())
    text_cast = "::text" if as_text else ""
    if shape == "record?":
        return f"(SELECT json_build_object({pairs}){text_cast} FROM {table} WHERE {where})"
    order_by = f" ORDER BY {order}" if order else ""
    return (
        f"(SELECT coalesce(json_agg(json_build_object({pairs}){order_by}), '[]'::json)"
        f"{text_cast} FROM {table} WHERE {where})"
    )


def pg_cache_entries_sql(*, one: bool = False) -> str:
    """One statement: ``(id_number, cache entry as JSON text)`` for every ID in ``%(ids)s``
    (with ``one``, for the single ID ``%(id)s``).

    The entry is what the fact cache stores (``{"s": stamp, "f": facts}``, dates ISO,
    money as strings), built by PostgreSQL from one snapshot, so that warming a cache
    for many people costs no Python decoding or encoding per fact.
    """
    facts = ", ".join(
        f"'{name}', {_pg_json(name, as_text=False)}".replace(":id", "w.id")
        for name in sorted(FACTS)
    )
    source = "(SELECT %(id)s::text)" if one else "unnest(%(ids)s::text[])"
    stamp = (
        "(SELECT epoch FROM registry_state WHERE id = 1), "
        "coalesce((SELECT version FROM fact_versions WHERE id_number = w.id), 0)"
    )
    return (
        f"SELECT w.id, json_build_object('s', json_build_array({stamp}), "
        f"'f', json_build_object({facts}))::text FROM {source} AS w(id)"
    )


def stamps_from_rows(ids: Iterable[str], rows: Iterable[Sequence[Any]]) -> dict[str, Stamp]:
    """Stamps from the rows of :data:`PG_STAMPS_SQL` (``''`` then epoch, then versions)."""
    versions = {str(key): int(value) for key, value in rows}
    epoch = versions.pop("")
    return {i: Stamp(epoch, versions.get(i, 0)) for i in ids}


class SqlFactSource:
    """Facts straight from the registry database (see the module docstring)."""

    def __init__(self, engine: Engine, reads: Engine | None = None) -> None:
        """``reads``, when given, is an engine on the same database for the single-
        statement reads (:meth:`_pg_row`); it is owned by this source (see :meth:`close`).
        Its pool need not ping a connection before lending it (``pool_pre_ping=False``):
        each read already retries once on a fresh connection when the one it got had
        broken, and the ping costs three round trips a read (BEGIN, ``SELECT 1``, the
        rollback): gathering every fact of a person took 40 µs more PostgreSQL CPU,
        about 80 µs more client CPU and 130 µs more wall time with it."""
        self._engine = engine
        self._reads = reads or engine
        self._owns_reads = reads is not None
        self._postgres = is_postgres(engine)
        self._pg_sql: dict[frozenset[str], tuple[list[str], str]] = {}

    @property
    def async_conninfo(self) -> str | None:
        """On PostgreSQL, the database for connections psycopg opens itself (an event
        loop's: :mod:`data_lookups.grouped_gathers`); None on SQLite."""
        if not self._postgres:
            return None
        url = self._reads.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def close(self) -> None:
        """Release the connections of the reads engine, if this source was given one."""
        if self._owns_reads:
            self._reads.dispose()

    def gather(self, id_number: str, names: frozenset[str]) -> Facts:
        return self.gather_stamped(id_number, names)[1]

    def stamp(self, id_number: str) -> Stamp:
        """The person's current :class:`Stamp` (one primary-key read)."""
        if self._postgres:
            row = self._pg_row(_PG_STAMP_SQL, id_number)
        else:
            with unavailable_as_registry_error(), self._engine.connect() as conn:
                row = tuple(conn.execute(text(_STAMP_SQL), {"id": id_number}).one())
                conn.rollback()
        return Stamp(int(row[0]), int(row[1] or 0))

    def stamps_in(self, conn: Connection, id_numbers: Iterable[str]) -> dict[str, Stamp]:
        """The current :class:`Stamp` of each person, read on ``conn`` in one statement."""
        ids = sorted(set(id_numbers))
        if self._postgres:  # straight through psycopg: this runs once per group commit
            driver: Any = conn.connection.driver_connection
            try:
                joined = ",".join(ids)  # ID numbers hold no commas (digits and X)
                # never prepared: a generic plan cannot know how many IDs come
                rows = driver.execute(PG_STAMPS_SQL, {"ids": joined}, prepare=False).fetchall()
            except psycopg.OperationalError as error:
                raise RegistryUnavailable(_UNAVAILABLE) from error
        else:
            with unavailable_as_registry_error():
                rows = conn.execute(_STAMPS_SQL, {"ids": ids}).all()
        return stamps_from_rows(ids, rows)

    def gather_stamped(self, id_number: str, names: frozenset[str]) -> tuple[Stamp, Facts]:
        """The facts asked for and the stamp they were read at, from one snapshot."""
        names = check_names(names)
        if self._postgres:
            return self._gather_pg(id_number, names)
        with unavailable_as_registry_error(), self._engine.connect() as conn:
            result = self._gather_sqlite(conn, id_number, names)
            conn.rollback()
        return result

    def gather_in(self, conn: Connection, id_number: str, names: frozenset[str]) -> Facts:
        """The facts asked for, read on ``conn`` inside its transaction.

        For a writer holding a lock in that transaction: it needs no second pooled
        connection (which could deadlock a pool whose other connections wait for
        the same lock) and sees the transaction's own writes.
        """
        names = check_names(names)
        with unavailable_as_registry_error():
            if not self._postgres:
                return self._gather_sqlite(conn, id_number, names)[1]
            ordered, statement = self._pg_statement(names)
            row = tuple(conn.exec_driver_sql(statement, {"id": id_number}).one())
        return self._pg_decode(ordered, row)[1]

    def _pg_statement(self, names: frozenset[str]) -> tuple[list[str], str]:
        prepared = self._pg_sql.get(names)
        if prepared is None:
            ordered = sorted(names)
            columns = [_STAMP_SQL.removeprefix("SELECT ")] + [_pg_json(n) for n in ordered]
            sql = ("SELECT " + ", ".join(columns)).replace(":id", "%(id)s")
            prepared = (ordered, sql)
            self._pg_sql[names] = prepared
        return prepared

    def _gather_pg(self, id_number: str, names: frozenset[str]) -> tuple[Stamp, Facts]:
        ordered, statement = self._pg_statement(names)
        return self._pg_decode(ordered, self._pg_row(statement, id_number))

    @staticmethod
    def _pg_decode(ordered: list[str], row: tuple[Any, ...]) -> tuple[Stamp, Facts]:
        stamp = Stamp(int(row[0]), int(row[1] or 0))
        facts: Facts = {}
        for i, name in enumerate(ordered, 2):
            raw = row[i]
            facts[name] = decode_fact(name, orjson.loads(raw) if isinstance(raw, str) else raw)
        return stamp, facts

    def _pg_row(self, sql: str, id_number: str) -> tuple[Any, ...]:
        """One row of one statement, in autocommit (a statement is a snapshot by itself).

        Straight on the pooled psycopg connection: no BEGIN/ROLLBACK round trips and
        psycopg prepares the statement server-side after a few runs. A connection
        that broke while pooled is discarded and the read retried once.
        """
        for attempt in (1, 2):
            try:
                pooled = self._reads.raw_connection()
            except (exc.DBAPIError, psycopg.OperationalError) as error:
                raise RegistryUnavailable(_UNAVAILABLE) from error
            dbapi: Any = pooled.driver_connection
            try:
                dbapi.autocommit = True
                row = dbapi.execute(sql, {"id": id_number}).fetchone()
                return tuple(row)
            except psycopg.OperationalError as error:
                pooled.invalidate()
                if attempt == 2:
                    raise RegistryUnavailable(_UNAVAILABLE) from error
            finally:
                if not dbapi.closed:  # back to the pool as it came: in transaction mode
                    dbapi.autocommit = False
                pooled.close()
        raise AssertionError("unreachable")

    def _gather_sqlite(
        self, conn: Connection, id_number: str, names: frozenset[str]
    ) -> tuple[Stamp, Facts]:
        params = {"id": id_number}
        epoch, version = conn.execute(text(_STAMP_SQL), params).one()
        facts: Facts = {}
        for name in sorted(names):
            table, where, order = _QUERIES[name]
            shape, fields = FACTS[name]
            cols = ", ".join(fields) if fields else name
            order_by = f" ORDER BY {order}" if order else ""
            rows = conn.execute(text(f"SELECT {cols} FROM {table} WHERE {where}{order_by}"), params)
            if shape == "list":
                facts[name] = [decode_record(name, dict(r._mapping)) for r in rows]
            elif shape == "record?":
                first = rows.first()
                facts[name] = None if first is None else decode_record(name, dict(first._mapping))
            else:
                value = rows.scalar()
                facts[name] = decode_fact(name, value)
        return Stamp(int(epoch), int(version or 0)), facts
