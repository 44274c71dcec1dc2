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
from collections.abc import Callable
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import Engine, exc

from approval_service.errors import IssuanceConflict
from approval_service.service import group_store
from approval_service.service.prepared_rows import Prepared
from data_lookups.database import write_transaction
from data_lookups.issuance import Issuer

from .pg_groups import TODAY, driver_of, rows_for, seen, with_fund
from .record_rows import new_id


@pytest.fixture(params=["insert", "copy"])
def insert_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(group_store, "COPY_FROM", 1 if request.param == "copy" else 10**9)
    return str(request.param)


def finish(engine: Engine, work: Callable[[Issuer], None], rows: list[Prepared]) -> None:
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


def test_a_typical_record_is_stored_uncompressed(engine: Engine, insert_path: str) -> None:
    """A record just over 2 kB (a policy of many conditions; most records are a little
    smaller) is not compressed on insert (migration 0014): the same row in a table with
    PostgreSQL's default target is."""
    me = new_id()
    trace = [  # as stored: what each condition found (its text is the policy's)
        {
            "code": f"CONDITION_{n}",
            "outcome": "passed",
            "values": {
                "person.status": "alive",
                "age(person.birth_date, today)": 86,
                f"min_age_{n}": n,
            },
        }
        for n in range(16)
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
