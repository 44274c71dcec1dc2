"""The group statements (``group_store``) alike on PostgreSQL (straight through psycopg)
and SQLite (SQLAlchemy Core): rows round-trip, errors are SQLAlchemy's, earlier answers
and stamps are read as the writer needs them.

Every test runs on both backends (``conftest.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    exc,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from approval_service.service import group_store
from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container
from approval_service.service.documents import dumps, recorded_document
from approval_service.service.prepared_rows import prepare_row
from approval_service.service.records import applications, outbox
from data_lookups.database import write_transaction

from .applicants import (
    TODAY,
    add_person,
    new_key,
    postgres,
    record,
    recorded,
    scalar,
)
from .record_rows import NOW, new_id, outbox_row, record_row

# -- group_store: the same on PostgreSQL (psycopg pipelines) and SQLite (SQLAlchemy Core) -------

FACTS: dict[str, Any] = {
    "person": {"birth_date": date(1940, 4, 4), "hukou_region": "341602", "status": "alive"},
    "allowances": [],
    "photo": None,
    "fund": {"balance": Decimal("1234.50"), "last_rent_withdrawal_date": None},
}
AWKWARD = '制表符\t换行\n反斜杠\\ 引号" \\N 结束'  # separators, escapes and a NULL marker


def application_row(channel: str, key: str | None, **changes: Any) -> dict[str, Any]:
    """A referral's record with awkward text and nulls inside its JSON."""
    row = record_row(new_id(), channel=channel, key=key)
    row.update(
        decision="referred",
        reasons=[{"code": "PERSON_NOT_FOUND", "message": AWKWARD, "basis": None}],
        result={},
        facts=FACTS,
        trace=[{"code": "PERSON_NOT_FOUND", "passed": False, "values": {"x": None}}],
        form={"mailing_address": "亳州市谯城区", "note": None},
        timings={"gather_ms": 0.25, "decide_ms": 0.01, "total_ms": 1.5},
        document={"application_id": row["id"], "result": {"amount": Decimal("60.00")}, "n": [1, 2]},
    )
    row.update(changes)
    return row


JSON_COLUMNS = ["reasons", "result", "facts", "trace", "form", "timings", "document"]
NULLABLE = ["idempotency_key", "request_hash", "deadline", "review_state", "officer", "reviewed_at"]


def as_json(value: Any) -> Any:
    """What a JSON column holds after a round trip: dates ISO, money strings, null kept."""
    return orjson.loads(dumps(value))


def nulls(container: Container, table: str, columns: Sequence[str], row_id: str) -> list[bool]:
    """Which of the columns hold SQL NULL (in the row with this primary key)."""
    tests = ", ".join(f"{c} IS NULL" for c in columns)
    key = "dedup_key" if table == "outbox" else "id"
    with container.engine.connect() as conn:
        found = conn.execute(text(f"SELECT {tests} FROM {table} WHERE {key} = :i"), {"i": row_id})
        return [bool(n) for n in found.one()]


def insert_rows(conn: Connection, rows_by_table: dict[Table, list[dict[str, Any]]]) -> None:
    """Rows prepared (JSON encoded on PostgreSQL) and inserted, as the group writer does."""
    pg = conn.dialect.name == "postgresql"
    group_store.insert_prepared(
        conn,
        [prepare_row(pg, t, row) for t, rows in rows_by_table.items() for row in rows],
    )


@pytest.fixture(params=["insert", "copy"])
def insert_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """PostgreSQL inserts a small group's rows one INSERT each, a large group's by COPY:
    the tests that take this fixture run both ways, whatever the number of rows."""
    copy_from = 1 if request.param == "copy" else 10**9
    monkeypatch.setattr(group_store, "COPY_FROM", copy_from)
    return str(request.param)


def test_inserted_rows_round_trip_json_and_keep_none_null(
    container: Container, insert_path: str
) -> None:
    rows = [
        application_row("portal", new_key()),
        application_row("portal", None, deadline=date(2026, 11, 26), review_state="open"),
    ]
    message = outbox_row(AWKWARD, new_id())
    with write_transaction(container.engine) as conn:  # both tables at once, as a group does
        insert_rows(conn, {applications: rows, outbox: [message]})
        insert_rows(conn, {applications: [], outbox: []})  # nothing to do
    for row in rows:
        stored = record(container, row["id"])
        for column in JSON_COLUMNS:
            assert stored[column] == as_json(row[column]), column
        for column in ("channel", "idempotency_key", "request_hash", "applicant_id", "deadline"):
            assert stored[column] == row[column], column
        assert stored["business_date"] == TODAY
        assert stored["decided_at"] == (NOW if postgres(container) else NOW.replace(tzinfo=None))
        assert nulls(container, "applications", NULLABLE, row["id"]) == [
            row.get(c) is None for c in NULLABLE
        ]
    columns = ["sent_at", "last_error"]
    assert nulls(container, "outbox", columns, message["dedup_key"]) == [True, True]
    with container.engine.connect() as conn:
        text_, attempts = conn.execute(
            text("SELECT text, attempts FROM outbox WHERE dedup_key = :k"),
            {"k": message["dedup_key"]},
        ).one()
    assert (text_, attempts) == (AWKWARD, 0)


def test_inserting_rows_raises_sqlalchemy_integrity_error(
    container: Container, insert_path: str
) -> None:
    """apply() answers a lost idempotency race by catching SQLAlchemy's IntegrityError."""
    key = new_key()
    with write_transaction(container.engine) as conn:
        insert_rows(conn, {applications: [application_row("portal", key)]})
    twin = [application_row("portal", None), application_row("portal", key)]
    message = outbox_row("never sent", new_id())
    with pytest.raises(exc.IntegrityError), write_transaction(container.engine) as conn:
        insert_rows(conn, {outbox: [message], applications: twin})
    assert recorded(container, idempotency_key=key) == 1  # nothing of the failed group stayed
    assert recorded(container, id=twin[0]["id"]) == 0
    sql = "SELECT count(*) FROM outbox WHERE dedup_key = :k"
    assert scalar(container, sql, k=message["dedup_key"]) == 0


def test_earlier_answers_finds_exactly_the_recorded_pairs(container: Container) -> None:
    key, other = new_key(), new_key()
    portal = application_row("portal", key)
    counter = application_row("counter", key, document={"answer": "counter", "n": None})
    unkeyed = application_row("portal", None)
    with write_transaction(container.engine) as conn:
        insert_rows(conn, {applications: [portal, counter, unkeyed]})
    asked = [
        ("portal", key),
        ("portal", key),  # asked twice
        ("counter", key),
        ("portal", other),  # never used
        ("elsewhere", key),  # used, but by other channels
    ]
    with write_transaction(container.engine) as conn:
        found = group_store.earlier_answers(conn, asked)
        assert group_store.earlier_answers(conn, []) == {}
    zone, calendar = container.clock.zone, container.calendar
    answers = {k: (d, recorded_document(r, zone, calendar)) for k, (d, r) in found.items()}
    assert answers == {
        ("portal", key): (portal["request_hash"], as_json(portal["document"])),
        ("counter", key): (counter["request_hash"], as_json(counter["document"])),
    }


def test_open_group_locks_the_people_and_reads_stamps_and_first_answers(
    container: Container, service: ApplicationService
) -> None:
    versioned, unregistered = add_person(container), new_id()
    key = new_key()
    service.apply("portal", "elderly-allowance", versioned, None, key)  # issues: version 2
    people = [versioned, unregistered, versioned]
    keys = [("portal", key), ("portal", new_key())]
    with write_transaction(container.engine) as conn:
        stamps, earlier = group_store.open_group(conn, container.sql_facts, people, keys)
        assert (stamps, earlier) == (
            container.sql_facts.stamps_in(conn, people),
            group_store.earlier_answers(conn, keys),
        )
        if postgres(container):  # held by this transaction: another one cannot take them
            assert not any(try_lock(container, p) for p in (versioned, unregistered))
    assert set(stamps) == {versioned, unregistered}
    assert stamps[versioned].version == 2 and stamps[unregistered].version == 0
    assert stamps[versioned].epoch == stamps[unregistered].epoch
    assert list(earlier) == [("portal", key)]
    if postgres(container):  # released with the transaction
        assert all(try_lock(container, p) for p in (versioned, unregistered))


def try_lock(container: Container, person: str) -> bool:
    with container.engine.connect() as conn:
        got = conn.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtextextended(:i, 0))"), {"i": person}
        ).scalar()
        conn.rollback()
    return bool(got)


def test_none_in_a_json_column_is_stored_as_sqlalchemy_stores_it(
    container: Container, insert_path: str
) -> None:
    """The psycopg path writes what SQLAlchemy Core writes: a None in a JSON column is JSON
    null (SQLAlchemy's default), in any other column SQL NULL. (The first COPY version wrote
    SQL NULL for JSON on PostgreSQL only.)"""
    metadata = MetaData()
    name = f"probe_{secrets.token_hex(4)}"
    fast, core = (
        Table(
            f"{name}_{suffix}",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("doc", JSON().with_variant(JSONB(), "postgresql")),
            Column("note", String(20)),
        )
        for suffix in ("fast", "core")
    )
    rows: list[dict[str, Any]] = [
        {"id": 1, "doc": None, "note": None},
        {"id": 2, "doc": {"a": None}, "note": "x"},
    ]
    metadata.create_all(container.engine)
    try:
        with write_transaction(container.engine) as conn:
            insert_rows(conn, {fast: rows})
            conn.execute(insert(core), rows)
        stored: dict[str, Any] = {}
        for table in (fast, core):
            with container.engine.connect() as conn:
                stored[table.name] = (
                    conn.execute(
                        text(f"SELECT id, doc IS NULL, note IS NULL FROM {table.name} ORDER BY id")
                    ).all(),
                    conn.execute(select(table.c.doc).order_by(table.c.id)).scalars().all(),
                )
    finally:
        metadata.drop_all(container.engine)
    assert stored[fast.name] == stored[core.name]
    checks, docs = stored[fast.name]
    assert docs == [None, {"a": None}]
    assert [(i, bool(d), bool(n)) for i, d, n in checks] == [(1, False, True), (2, False, False)]
