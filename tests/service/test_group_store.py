"""finish_group on PostgreSQL: issuance, records and COMMIT in one pipeline, all or nothing.

The group writer relies on two things here: when ``finish_group`` returns, the
group is durable (another connection sees it before the writer's own commit,
which has nothing left to do); when it raises, nothing of the group stays, and
the error says whose fault it was (a refused issuance or a broken registry
constraint is an :class:`IssuanceConflict`, a repeated ``Idempotency-Key`` is
SQLAlchemy's ``IntegrityError``, which ``apply`` answers with the first answer).
Each case runs with the records inserted one ``INSERT`` each in the pipeline and
by ``COPY`` before it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, exc, insert, text

from approval_service.errors import IssuanceConflict
from approval_service.service import group_store
from approval_service.service.records import applications, outbox
from data_lookups.database import ensure_schema, make_engine, write_transaction
from data_lookups.facts import SqlFactSource
from data_lookups.issuance import Issuer
from data_lookups.models import FundAccount

from .record_rows import NOW, new_id, outbox_row, record_row

TODAY = NOW.date()


@pytest.fixture(scope="module")
def engine(pg_database: Callable[[str], str]) -> Iterator[Engine]:
    made = make_engine(pg_database("group_store"))
    ensure_schema(made)
    yield made
    made.dispose()


@pytest.fixture(params=["insert", "copy"])
def insert_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(group_store, "COPY_FROM", 1 if request.param == "copy" else 10**9)
    return str(request.param)


def with_fund(engine: Engine, balance: str) -> str:
    """A new person with a normal provident-fund account holding ``balance``."""
    me = new_id()
    with write_transaction(engine) as conn:
        conn.execute(
            insert(FundAccount).values(
                id_number=me,
                account_no=f"G{me}",
                status="normal",
                balance=Decimal(balance),
                continuous_months=60,
                has_outstanding_loan=False,
            )
        )
    return me


def rows_for(applicant: str, key: str | None = None) -> list[group_store.Prepared]:
    """A decision record and its notification, prepared as the writer gets them."""
    record = record_row(applicant, key=key)
    message = outbox_row("已办结", applicant, record["id"])
    return [
        group_store.prepare_row(True, applications, record),
        group_store.prepare_row(True, outbox, message),
    ]


def seen(engine: Engine, me: str) -> dict[str, Any]:
    """What another connection sees of the person: records, issuance, balance, version."""
    with engine.connect() as conn:
        one = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM applications WHERE applicant_id = :i), "
                "(SELECT count(*) FROM outbox WHERE recipient_id = :i), "
                "(SELECT count(*) FROM allowances WHERE id_number = :i AND source = 'miaopi'), "
                "(SELECT count(*) FROM fund_withdrawals WHERE id_number = :i), "
                "(SELECT balance FROM fund_accounts WHERE id_number = :i), "
                "(SELECT version FROM fact_versions WHERE id_number = :i)"
            ),
            {"i": me},
        ).one()
    keys = ("records", "messages", "allowances", "withdrawals", "balance", "version")
    return dict(zip(keys, one, strict=True))


def driver_of(conn: Connection) -> psycopg.Connection[Any]:
    driver: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    return driver


def finish(
    engine: Engine, work: Callable[[Issuer], None], rows: list[group_store.Prepared]
) -> None:
    with write_transaction(engine) as conn:
        issuer = group_store.issuer(conn, cards_expected=0)
        work(issuer)
        group_store.finish_group(conn, issuer, rows)


def test_a_finished_group_is_durable_before_the_writer_commits(
    engine: Engine, insert_path: str
) -> None:
    me = with_fund(engine, "3000.00")
    with write_transaction(engine) as conn:
        issuer = group_store.issuer(conn, cards_expected=0)
        issuer.issue_allowance(me, TODAY, Decimal("60"), "a1")
        issuer.record_rent_withdrawal(me, Decimal("1000.00"), TODAY, "r1")
        group_store.finish_group(conn, issuer, rows_for(me) + rows_for(me))
        status = driver_of(conn).info.transaction_status
        elsewhere = seen(engine, me)  # still inside the writer's transaction block
    assert status == psycopg.pq.TransactionStatus.IDLE  # nothing left for the writer
    assert elsewhere == {
        "records": 2,
        "messages": 2,
        "allowances": 1,
        "withdrawals": 1,
        "balance": Decimal("2000.00"),
        "version": 1,
    }


def two_allowances(issuer: Issuer, me: str) -> None:
    issuer.issue_allowance(me, TODAY, Decimal("60"), "a")
    issuer.issue_allowance(me, TODAY, Decimal("60"), "b")


REFUSALS: list[tuple[str, str, Callable[[str], Callable[[Issuer], None]]]] = [
    # (case, what the conflict says, the group's issuance for the person)
    (
        "rent above the balance",
        "the account is not normal or the balance is short",
        lambda me: lambda i: i.record_rent_withdrawal(me, Decimal("3000.01"), TODAY, "r"),
    ),
    (
        "retirement of another amount",
        "the balance moved",
        lambda me: lambda i: i.close_fund_for_retirement(me, Decimal("2999.99"), TODAY, "x"),
    ),
    (
        "a card that is not valid",
        "is not a valid card of the applicant",
        lambda me: lambda i: i.cancel_card("AH34169999999999", "lost", TODAY, me),
    ),
    (
        "a second active allowance",
        "already has an active allowance",
        lambda me: lambda i: two_allowances(i, me),
    ),
]


@pytest.mark.parametrize(("case", "message", "work"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_refused_issuance_commits_nothing_of_the_group(
    engine: Engine,
    insert_path: str,
    case: str,
    message: str,
    work: Callable[[str], Callable[[Issuer], None]],
) -> None:
    me, other = with_fund(engine, "3000.00"), new_id()
    before = seen(engine, me)

    def group(issuer: Issuer) -> None:
        issuer.issue_allowance(other, TODAY, Decimal("60"), "fine")  # queued before the refusal
        work(me)(issuer)

    with pytest.raises(IssuanceConflict, match=message) as raised:
        finish(engine, group, rows_for(me) + rows_for(other))
    assert me not in str(raised.value)  # masked, if named at all
    assert seen(engine, me) == before
    assert seen(engine, other) == seen(engine, new_id())  # as for someone never seen


def test_a_repeated_key_is_an_integrity_error_and_commits_nothing(
    engine: Engine, insert_path: str
) -> None:
    """apply() answers a lost Idempotency-Key race from SQLAlchemy's IntegrityError: the
    key's unique constraint must not pass for an issuance conflict."""
    first, twin = new_id(), new_id()
    key = secrets.token_hex(8)
    finish(engine, lambda i: None, rows_for(first, key))
    with pytest.raises(exc.IntegrityError):
        finish(
            engine,
            lambda i: i.issue_allowance(twin, TODAY, Decimal("60"), "t"),
            rows_for(twin, key),
        )
    assert seen(engine, first)["records"] == 1
    assert seen(engine, twin) == seen(engine, new_id())


def client_turns(trace: Path) -> int:
    """How many times the client waited for the server: libpq's trace, a turn each time a
    backend message follows frontend ones."""
    turns, last = 0, ""
    for line in trace.read_text().splitlines():
        direction = line.split("\t", 1)[0]
        if direction == "B" and last == "F":
            turns += 1
        if direction in ("F", "B"):
            last = direction
    return turns


GROUPS: dict[str, tuple[int, Callable[[Issuer, str], object]]] = {
    # (cards expected, what the group issues)
    "nothing issued": (0, lambda issuer, me: None),
    "an allowance": (0, lambda issuer, me: issuer.issue_allowance(me, TODAY, Decimal("60"), "a")),
    "a card": (1, lambda issuer, me: issuer.issue_card(me, "A", TODAY, date(2031, 12, 1), "c")),
}


@pytest.mark.parametrize("case", list(GROUPS))
def test_a_small_group_costs_three_round_trips(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """psycopg's BEGIN, opening the group (locks, stamps, earlier answers, card numbers),
    finishing it (issuance, records, COMMIT). Counted, not timed: a statement that waits
    on its own (a commit() with a Sync of its own, a draw in the middle of issuing) adds
    a turn and fails this."""
    monkeypatch.setattr(group_store, "COPY_FROM", 10**9)
    cards, work = GROUPS[case]
    me = with_fund(engine, "10.00")
    trace = tmp_path / "libpq.trace"
    with engine.connect() as conn, trace.open("w") as out:
        driver = driver_of(conn)
        driver.pgconn.trace(out.fileno())
        driver.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            with conn.begin():
                issuer = group_store.issuer(conn, cards_expected=cards)
                keys = [("portal", secrets.token_hex(8))]
                group_store.open_group(conn, SqlFactSource(engine), [me], keys, issuer)
                work(issuer, me)
                group_store.finish_group(conn, issuer, rows_for(me, keys[0][1]))
        finally:
            driver.pgconn.untrace()
    assert client_turns(trace) == 3
    assert seen(engine, me)["records"] == 1


def test_a_typical_record_is_stored_uncompressed(engine: Engine, insert_path: str) -> None:
    """A record just over 2 kB, as most are, is not compressed on insert (migration 0014):
    the same row in a table with PostgreSQL's default target is."""
    me = new_id()
    trace = [
        {
            "code": f"CONDITION_{n}",
            "require": f'person.status != "deceased" and age(person.birth_date, today) >= {n}',
            "on_fail": "reject",
            "outcome": "passed",
            "values": {"person.status": "alive", "person.birth_date": "1940-04-04", "n": n},
        }
        for n in range(10)
    ]
    rows = rows_for(me)
    rows[0] = rows[0].replaced("trace", trace)
    finish(engine, lambda i: None, rows)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TEMP TABLE default_target (LIKE applications) ON COMMIT DROP")
        conn.exec_driver_sql(
            "INSERT INTO default_target SELECT * FROM applications WHERE applicant_id = %s",
            (me,),
        )
        stored, default = (
            conn.exec_driver_sql(
                f"SELECT pg_column_size(t.*), pg_column_compression(trace) FROM {table} t "
                "WHERE applicant_id = %s",
                (me,),
            ).one()
            for table in ("applications", "default_target")
        )
    assert stored[0] > 2100 and stored[1] is None
    assert default[1] is not None  # large enough that PostgreSQL would have compressed it
