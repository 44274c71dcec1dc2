"""The group writer's session on PostgreSQL: rows looked up by key, whatever the statistics.

A prepared statement keeps the generic plan it was first given, priced on the
statistics of that moment. Made while ``fact_versions`` held a page, the stamp check
of every group scanned the whole table for each person from then on (3-10 ms a group
at a few thousand rows, on a database whose autovacuum is off). The writer's session
(:func:`group_store.writer_session`) prices scans out, so the plan is an index lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text

from approval_service.errors import RegistryUnavailable
from approval_service.service import group_store
from approval_service.service.group_commit import GroupCommitter
from data_lookups.database import ensure_schema, make_engine
from data_lookups.statement_batch import converted


@pytest.fixture(scope="module")
def small_versions(pg_database: Callable[[str], str]) -> Iterator[Engine]:
    """A database whose fact_versions holds a page, analysed (a new deployment's)."""
    engine = make_engine(pg_database("writer_session"))
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO fact_versions (id_number, version) "
                "SELECT lpad(n::text, 18, '0'), 1 FROM generate_series(1, 20) AS n"
            )
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "ANALYZE fact_versions"
        )
    yield engine
    engine.dispose()


def stamp_check_plan(conn: Connection) -> str:
    """The generic plan the stamp check is prepared with on this session."""
    query, _ = converted(group_store._EXPECT_CURRENT)
    conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
    conn.exec_driver_sql("PREPARE stamp_check AS " + query.decode())
    try:
        rows = conn.exec_driver_sql("EXPLAIN EXECUTE stamp_check('a,b', '1,2', 0)")
        return "\n".join(row[0] for row in rows)
    finally:
        conn.exec_driver_sql("DEALLOCATE stamp_check")
        conn.rollback()


@pytest.mark.parametrize(
    ("writer", "expected", "never"),
    [
        (True, "pk_fact_versions", "Seq Scan on fact_versions"),
        # the hazard itself, so that the case above shows the setting is what helps
        (False, "Seq Scan on fact_versions", "pk_fact_versions"),
    ],
)
def test_the_stamp_check_looks_each_person_up_by_key_on_the_writers_session(
    small_versions: Engine, writer: bool, expected: str, never: str
) -> None:
    with small_versions.connect() as conn:
        try:
            if writer:
                group_store.writer_session(conn)
            plan = stamp_check_plan(conn)
        finally:
            conn.invalidate()  # a session set up for the writer goes back to no pool
    assert expected in plan and never not in plan, plan


def test_the_writers_setting_outlives_a_group_rolled_back(small_versions: Engine) -> None:
    with small_versions.connect() as conn:
        try:
            group_store.writer_session(conn)
            with pytest.raises(Exception, match="division by zero"), conn.begin():
                conn.exec_driver_sql("SELECT 1 / 0")
            assert conn.exec_driver_sql("SHOW enable_seqscan").scalar() == "off"
        finally:
            conn.invalidate()


@pytest.fixture
def checked_in(small_versions: Engine) -> Iterator[list[int]]:
    """The ids of the driver connections handed back to the pool (an invalidated one
    is handed back as None, closed)."""
    seen: list[int] = []

    def checkin(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            seen.append(id(dbapi_connection))

    event.listen(small_versions.pool, "checkin", checkin)
    yield seen
    event.remove(small_versions.pool, "checkin", checkin)


def test_the_writer_sets_up_each_connection_it_opens_and_hands_none_back(
    small_versions: Engine, checked_in: list[int]
) -> None:
    """The container's writer: its groups run on the set-up session, a connection it
    opens again after losing one is set up too, and none goes back to the pool."""
    seen: list[str] = []
    writers: set[int] = set()

    def process(conn: Connection, group: Sequence[int]) -> list[int]:
        writers.add(id(conn.connection.dbapi_connection))
        seen.append(conn.exec_driver_sql("SHOW enable_seqscan").scalar_one())
        return list(group)

    committer = GroupCommitter(small_versions, process, on_connect=group_store.writer_session)
    try:
        assert committer.write(1) == 1
        with small_versions.connect() as admin:  # the writer's backend goes away
            admin.exec_driver_sql(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(RegistryUnavailable):
            committer.write(2)
        assert committer.write(3) == 3  # on a new connection, set up again
    finally:
        committer.close()
    assert seen == ["off", "off"]  # the group on the dead connection ran nothing
    assert len(writers) == 2 and checked_in  # the admin's went back
    assert writers.isdisjoint(checked_in)


def test_a_connection_the_writer_could_not_set_up_is_dropped_and_the_next_group_retries(
    small_versions: Engine, checked_in: list[int]
) -> None:
    opened: list[Any] = []

    def set_up(conn: Connection) -> None:
        opened.append(conn.connection.dbapi_connection)
        if len(opened) == 1:
            raise RuntimeError("the session could not be set up")
        group_store.writer_session(conn)

    committer = GroupCommitter(small_versions, lambda conn, group: list(group), on_connect=set_up)
    try:
        with pytest.raises(RuntimeError, match="could not be set up"):
            committer.write(1)  # its group fails, nothing was written on that connection
        assert opened[0].closed
        assert committer.write(2) == 2
    finally:
        committer.close()
    assert len(opened) == 2 and not {id(c) for c in opened} & set(checked_in)
