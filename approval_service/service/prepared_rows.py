"""Rows prepared for the group writer: on PostgreSQL the statement's parameters in column
order with JSON columns already encoded (the costly part, done before the writer), and
the ``INSERT`` each shape of row goes in by (:mod:`group_store` sends them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

from approval_service.service.documents import dumps


@dataclass(frozen=True, slots=True)
class Prepared:
    """One row to insert, ready for :func:`group_store.insert_prepared`.

    On PostgreSQL ``values`` are the statement's parameters in column order, JSON
    columns already turned into text (the costly part, done by whoever prepares the
    row, so the group writer need not); on SQLite, the row itself.
    """

    table: Table
    columns: tuple[str, ...]
    values: Sequence[Any] | Mapping[str, Any]

    def replaced(self, column: str, value: Any) -> Prepared:
        """The same row with one column's value replaced (encoded like the others)."""
        if isinstance(self.values, Mapping):
            return Prepared(self.table, self.columns, {**self.values, column: value})
        _, json_columns = insert_statement(self.table, self.columns)
        values = list(self.values)
        values[self.columns.index(column)] = dumps(value) if column in json_columns else value
        return Prepared(self.table, self.columns, values)


def prepare_row(postgres: bool, table: Table, row: Mapping[str, Any]) -> Prepared:
    """A row for :func:`group_store.insert_prepared`; a None in a JSON column will be
    JSON ``null``, as SQLAlchemy's JSON type stores it."""
    columns = tuple(row)
    if not postgres:
        return Prepared(table, columns, row)
    _, json_columns = insert_statement(table, columns)
    return Prepared(
        table, columns, [dumps(row[c]) if c in json_columns else row[c] for c in columns]
    )


_POSTGRES = postgresql.dialect()  # type: ignore[no-untyped-call]


def _json_cast(column_type: TypeEngine[Any]) -> str:
    implemented = column_type.dialect_impl(_POSTGRES)
    return "jsonb" if isinstance(implemented, postgresql.JSONB) else "json"


_STATEMENTS: dict[tuple[str, tuple[str, ...]], tuple[str, frozenset[str]]] = {}


def insert_statement(table: Table, columns: tuple[str, ...]) -> tuple[str, frozenset[str]]:
    """``INSERT ... VALUES (%s, %s::json, ...)`` for these columns, and the JSON ones
    (each cast to its column's type on PostgreSQL, ``json`` or ``jsonb``)."""
    key = (table.name, columns)
    found = _STATEMENTS.get(key)
    if found is None:
        json_columns = frozenset(c for c in columns if isinstance(table.c[c].type, JSON))
        values = ", ".join(
            f"%s::{_json_cast(table.c[c].type)}" if c in json_columns else "%s" for c in columns
        )
        statement = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({values})"
        found = _STATEMENTS[key] = (statement, json_columns)
    return found
