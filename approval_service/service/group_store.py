"""The statements of a group commit, run on the connection of the group's transaction.

On PostgreSQL they go through libpq's pipeline, with no SQLAlchemy statement
building on the hot path: each round trip is one
:class:`~data_lookups.statement_batch.StatementBatch`, its statements sent in one
write and prepared once per connection. The group's ``BEGIN`` goes in its first
batch (the batch begins the transaction psycopg would), not in a round trip of its own.
A small group whose decisions need nothing read first (its cards' numbers, if
any, at hand: drawn by earlier groups) costs one round trip, :func:`write_at_once`:
the locks, a check by PostgreSQL that every person's stamp is still the one the
cache read (migration 0015), what the group issues, its records and the
``COMMIT`` (:func:`awrite_at_once`: the same, awaited on an event loop). When
PostgreSQL refuses any of it (a stamp moved, an
``Idempotency-Key`` was used before, an issuance was refused) the transaction is
rolled back and the group goes the long way, two round trips:
:func:`open_group`, which locks every person of the group (in one order, so two
groups cannot deadlock), then reads their stamps and the first answers of
repeated keys, and draws the numbers of the cards the group expects; and
:func:`finish_group`, which sends what the group issues (the :func:`issuer`
queued it), inserts every record (rows usually prepared, JSON encoded, before
the writer: :func:`prepared_rows.prepare_row`) and commits, all in one batch. A large
group's records go in by ``COPY``, two more round trips for each table copied.
Statements of a batch run one after the other, each with its own snapshot,
so the stamps are read (or checked) after the locks are held. On SQLite (the
embedded default, where the write transaction already serialises every writer)
the same work goes through SQLAlchemy Core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg
from sqlalchemy import Connection, Table, insert, select, tuple_

from approval_service.service.prepared_rows import Prepared, insert_statement
from approval_service.service.records import applications
from data_lookups.database import is_postgres
from data_lookups.facts import PG_STAMPS_SQL, SqlFactSource, Stamp, stamps_from_rows
from data_lookups.issuance import DirectIssuer, Issuer
from data_lookups.issuance_pipeline import PipelinedIssuer, translated
from data_lookups.statement_batch import StatementBatch

Row = Mapping[str, Any]
#: (channel, Idempotency-Key) -> (hash of the first request, its record's columns that
#: make its response document: documents.recorded_document)
Earlier = dict[tuple[str, str], tuple[str | None, dict[str, Any]]]
#: what documents.recorded_document reads of a record
DOCUMENT_COLUMNS = (
    "id",
    "item",
    "decision",
    "reasons",
    "result",
    "policy_version",
    "policy_sha256",
    "business_date",
    "decided_at",
    "deadline",
    "officer",
    "review_state",
    "reviewed_at",
    "document",
)

# ID numbers are digits and X: joined by commas they pass as one text parameter,
# which psycopg sends without inspecting a list element by element
_LOCK = (
    "SELECT count(pg_advisory_xact_lock(hashtextextended(id, 0))) "
    "FROM unnest(string_to_array(%(ids)s, ',')) AS id"
)
# _CUSTOM_PLANS: the long way's statements take a list whose length the planner cannot
# know from a prepared statement's generic plan; a generic plan chosen while a table was
# small (a seq scan) stays in use after it grew, and each group then scans the whole
# table. There they are never prepared, so each is planned for the list it is given.

# joined on both columns so the unique index (channel, idempotency_key) is searched
_EARLIER = (
    "SELECT a.channel, a.idempotency_key, a.request_hash, "
    + ", ".join(f"a.{column}" for column in DOCUMENT_COLUMNS)
    + " FROM applications a "
    "JOIN unnest(%(channels)s::text[], %(keys)s::text[]) AS k(channel, key) "
    "ON a.channel = k.channel AND a.idempotency_key = k.key"
)


# every person whose stamp moved since the cache read it; group_expect_current (migration
# 0015) fails the transaction unless there is none. Prepared (write_at_once): the version
# is a scalar subquery on the primary key, an index lookup per person on the writer's
# session however small the table was when the plan was made (_WRITER_SESSION).
_EXPECT_CURRENT = (
    "SELECT group_expect_current(count(*)) FROM ("
    "SELECT 1 FROM unnest(string_to_array(%(ids)s, ','), "
    "string_to_array(%(versions)s, ',')::bigint[]) AS e(id, version) "
    "WHERE coalesce((SELECT f.version FROM fact_versions f WHERE f.id_number = e.id), 0) "
    "<> e.version "
    "UNION ALL SELECT 1 FROM registry_state WHERE id = 1 AND epoch <> %(epoch)s) AS stale"
)
# The writer's statements find every row they read by a key. A prepared statement keeps
# the generic plan it got once, priced on the statistics of that moment: made while
# fact_versions held a page (a new deployment's first issuances; a database whose
# autovacuum is off never analyses it again), the stamp check above scanned the whole
# table for each person of every group ever after, 3-10 ms a group once it held a few
# thousand rows (only an ANALYZE of the table makes PostgreSQL plan it again). With scans
# priced out on the writer's session, its plans take an index wherever one serves,
# whatever the statistics say; every statement of the writer has one (a key lookup, an
# insert, an ON CONFLICT on a key), and the one-row registry_state costs nothing more.
_WRITER_SESSION = "SET enable_seqscan = off"
#: the largest group :func:`write_at_once` takes: the more entries, the likelier one is stale
#: or repeated and the whole group sent twice; a busy service's larger groups go the long way
AT_ONCE_MAX = 8


def _driver(conn: Connection) -> psycopg.Connection[Any] | None:
    if not is_postgres(conn):
        return None
    driver: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    return driver


def writer_session(conn: Connection) -> None:
    """Set up the group writer's own connection once, before its first group
    (PostgreSQL: plans look rows up by key, see ``_WRITER_SESSION``). Committed, so that
    no rollback of a group undoes it; the writer never hands the connection back to
    the pool (it drops it), so no other caller inherits the setting."""
    if is_postgres(conn):  # a lost connection: the writer's caller translates it
        conn.exec_driver_sql(_WRITER_SESSION)
        conn.commit()


def lock_people(conn: Connection, people: Iterable[str]) -> None:
    """Take the people's locks until the transaction ends (PostgreSQL; SQLite's write
    transaction, BEGIN IMMEDIATE, already serialises every writer)."""
    driver = _driver(conn)
    if driver is not None:
        with translated(_LOCK):
            driver.execute(_LOCK, {"ids": joined_ids(people)}, prepare=False)


def open_group(
    conn: Connection,
    facts: SqlFactSource,
    people: Sequence[str],
    keys: Iterable[tuple[str, str]],
    issuer: Issuer | None = None,
) -> tuple[dict[str, Stamp], Earlier]:
    """Lock the people, then read their stamps and the earlier answers for these keys;
    on PostgreSQL, the ``issuer``'s card numbers are drawn in the same round trip."""
    driver = _driver(conn)
    if driver is None:
        return facts.stamps_in(conn, people), earlier_answers(conn, keys)
    joined = joined_ids(people)
    wanted = sorted(set(keys))
    with translated("opening a group"):
        batch = StatementBatch(driver)  # prepare=False: see _CUSTOM_PLANS
        batch.add(_LOCK, {"ids": joined}, prepare=False)
        stamps = batch.add(PG_STAMPS_SQL, {"ids": joined}, prepare=False)
        earlier = batch.add(_EARLIER, _key_params(wanted), prepare=False) if wanted else None
        if isinstance(issuer, PipelinedIssuer):
            issuer.draw_ahead(batch)
        batch.run()
        earlier_rows = batch.rows(earlier) if earlier is not None else []
    return stamps_from_rows(people, batch.rows(stamps)), _earlier(earlier_rows)


def write_at_once(
    conn: Connection, stamps: Mapping[str, Stamp], issuer: Issuer, rows: Iterable[Prepared]
) -> bool:
    """Lock, check, issue, insert and commit a small group in one round trip (PostgreSQL).

    ``stamps``: the people's stamps as the cache read them (one epoch), on which the
    decisions were made; ``issuer`` holds what they issue. PostgreSQL checks under the
    locks that every stamp is still current (migration 0015). True: the group is
    durable. False: PostgreSQL refused something (a stamp moved, a key was used
    before, an issuance refused, a constraint broken) and nothing of it stays.
    """
    driver, pipelined = _at_once_driver(conn, issuer)
    with translated("writing the group at once"):
        try:
            _at_once_batch(driver, stamps, pipelined, rows).run()
        except psycopg.IntegrityError:
            # the batch's prepared statements outlive it: psycopg prepares nothing on
            # the service's connections, so its rollback deallocates nothing
            driver.rollback()
            return False
    return True


async def awrite_at_once(
    conn: Connection, stamps: Mapping[str, Stamp], issuer: Issuer, rows: Iterable[Prepared]
) -> bool:
    """:func:`write_at_once` on an event loop, for the writer's on-loop connection: the
    round trip, and the ``ROLLBACK`` of a refused group, are awaited, not waited for."""
    driver, pipelined = _at_once_driver(conn, issuer)
    with translated("writing the group at once"):
        try:
            await _at_once_batch(driver, stamps, pipelined, rows).arun()
        except psycopg.IntegrityError:
            rollback = StatementBatch(driver)  # in a failed transaction: no BEGIN first
            rollback.add("ROLLBACK", prepare=False)
            await rollback.arun()
            return False
    return True


def _at_once_driver(
    conn: Connection, issuer: Issuer
) -> tuple[psycopg.Connection[Any], PipelinedIssuer]:
    driver = _driver(conn)
    if driver is None or not isinstance(issuer, PipelinedIssuer):
        raise TypeError("only a PostgreSQL group with a pipelined issuer goes at once")
    return driver, issuer


def _at_once_batch(
    driver: psycopg.Connection[Any],
    stamps: Mapping[str, Stamp],
    issuer: PipelinedIssuer,
    rows: Iterable[Prepared],
) -> StatementBatch:
    """The one round trip of :func:`write_at_once`, queued, not yet sent."""
    (epoch,) = {stamp.epoch for stamp in stamps.values()}
    ids = sorted(stamps)
    check = {
        "ids": joined_ids(ids),
        "versions": ",".join(str(stamps[i].version) for i in ids),
        "epoch": epoch,
    }
    # prepared, unlike the long way's statements (see _CUSTOM_PLANS): parsing and
    # planning them took as long as carrying them out; the locks read no table and
    # the check looks up primary keys, by index on the writer's session (a plan
    # made while a table was small scanned it: _WRITER_SESSION)
    batch = StatementBatch(driver)
    batch.add(_LOCK, {"ids": check["ids"]})
    batch.add(_EXPECT_CURRENT, check)
    _queue_rest(batch, issuer, _by_statement(rows), commit=True)
    return batch


def issuer(conn: Connection, cards_expected: int, card_numbers: Sequence[str] = ()) -> Issuer:
    """Who issues for the group: on PostgreSQL, queued and sent in one pipeline (a
    conflict then loses the transaction), with ``card_numbers`` drawn earlier used
    first or, if none are given, ``cards_expected`` numbers drawn in
    :func:`open_group`; on SQLite, each primitive at once, each number drawn then."""
    driver = _driver(conn)
    if driver is None:
        return DirectIssuer(conn)
    return PipelinedIssuer(driver, cards_expected, card_numbers)


def _key_params(wanted: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    return {"channels": [c for c, _ in wanted], "keys": [k for _, k in wanted]}


def _earlier(rows: Iterable[Sequence[Any]]) -> Earlier:
    return {
        (channel, key): (digest, dict(zip(DOCUMENT_COLUMNS, record, strict=True)))
        for channel, key, digest, *record in rows
    }


def joined_ids(id_numbers: Iterable[str]) -> str:
    """Distinct ID numbers, sorted (the lock order), comma-separated."""
    ids = sorted(set(id_numbers))
    if any("," in i for i in ids):
        raise ValueError("an ID number cannot contain a comma")
    return ",".join(ids)


def earlier_answers(conn: Connection, keys: Iterable[tuple[str, str]]) -> Earlier:
    """The recorded answers for these (channel, key) pairs, where there are any."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    driver = _driver(conn)
    if driver is not None:
        with translated(_EARLIER):
            rows = driver.execute(_EARLIER, _key_params(wanted), prepare=False).fetchall()
    else:
        c = applications.c
        query = select(
            c.channel, c.idempotency_key, c.request_hash, *(c[n] for n in DOCUMENT_COLUMNS)
        ).where(tuple_(c.channel, c.idempotency_key).in_(sorted(wanted)))
        rows = [tuple(r) for r in conn.execute(query)]
    return _earlier(rows)


#: rows of one table in a group from which ``COPY`` inserts them, not one ``INSERT`` each:
#: where the two cost the same (``benchmarks/pipeline_sends.py --compare copy``)
COPY_FROM = 64


def insert_prepared(conn: Connection, rows: Iterable[Prepared]) -> None:
    """Insert prepared rows, table by table, in the caller's transaction.

    PostgreSQL: a table with many rows in the group (:data:`COPY_FROM`, a saturated
    service's largest groups) gets one ``COPY``, which costs two more round trips but
    less per row; the others go as prepared inserts in the group's last batch, one
    round trip in all. With the statement batch an ``INSERT`` each cost the writer 40 %
    less than the ``COPY`` for 24 rows, as much for 64, more for 96.
    """
    driver = _driver(conn)
    if driver is None:
        for (table, _), values in _by_statement(rows).items():
            conn.execute(insert(table), values)
        return
    _write(driver, rows, None, commit=False)


def finish_group(conn: Connection, issuer: Issuer, rows: Iterable[Prepared]) -> None:
    """Send what the group issues, insert its records and commit the transaction.

    PostgreSQL: the issuance, the records inserted one ``INSERT`` each and the
    ``COMMIT`` go in one pipeline, one round trip (a table with many rows is copied
    before it, as in :func:`insert_prepared`). A refused issuance or a
    broken constraint fails the transaction there, so the ``COMMIT`` is not carried
    out; what it raised is raised here, and the caller rolls back. When this returns,
    the group is durable: the writer's own commit has nothing left to do. SQLite:
    issued and inserted, left for the writer to commit.
    """
    driver = _driver(conn)
    if driver is None:
        issuer.flush()
        insert_prepared(conn, rows)
        return
    if not isinstance(issuer, PipelinedIssuer):  # it would issue outside the commit's pipeline
        raise TypeError("on PostgreSQL a group issues through group_store.issuer()")
    _write(driver, rows, issuer, commit=True)


def _by_statement(rows: Iterable[Prepared]) -> dict[tuple[Table, tuple[str, ...]], list[Any]]:
    by_statement: dict[tuple[Table, tuple[str, ...]], list[Any]] = {}
    for row in rows:
        by_statement.setdefault((row.table, row.columns), []).append(row.values)
    return by_statement


def _write(
    driver: psycopg.Connection[Any],
    rows: Iterable[Prepared],
    issuer: PipelinedIssuer | None,
    *,
    commit: bool,
) -> None:
    by_statement = _by_statement(rows)
    few = {key: values for key, values in by_statement.items() if len(values) < COPY_FROM}
    with translated("writing the group"):
        for (table, columns), values in by_statement.items():
            if (table, columns) not in few:
                _copy(driver, table, columns, values)
        if few or issuer is not None or commit:
            batch = StatementBatch(driver)
            _queue_rest(batch, issuer, few, commit=commit)
            batch.run()


def _queue_rest(
    batch: StatementBatch,
    issuer: PipelinedIssuer | None,
    by_statement: Mapping[tuple[Table, tuple[str, ...]], list[Any]],
    *,
    commit: bool,
) -> None:
    """Add to the batch what the group issues, its rows and the ``COMMIT``."""
    if issuer is not None:
        issuer.send(batch)
    for (table, columns), values in by_statement.items():
        statement, _ = insert_statement(table, columns)
        batch.add_many(statement, values)
    if commit:  # queued after the rest: carried out only if all of it was
        # (as a statement: psycopg's commit() would wait on a Sync of its own)
        batch.add("COMMIT", prepare=False)


def _copy(
    driver: psycopg.Connection[Any], table: Table, columns: tuple[str, ...], values: list[Any]
) -> None:
    """``COPY`` in text format: JSON columns hold JSON text already, None is SQL NULL."""
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    with driver.cursor() as cur, cur.copy(statement) as copy:
        for row in values:
            copy.write_row(row)
