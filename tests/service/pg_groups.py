"""PostgreSQL group-writer helpers shared by the group-store tests: a person with a fund,
a group's rows, what another connection sees, and libpq's count of round trips."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, insert, text

from approval_service.service.prepared_rows import Prepared, prepare_row
from approval_service.service.records import applications, outbox
from data_lookups.database import write_transaction
from data_lookups.models import FundAccount

from .record_rows import NOW, new_id, outbox_row, record_row

TODAY = NOW.date()


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


def rows_for(applicant: str, key: str | None = None) -> list[Prepared]:
    """A decision record and its notification, prepared as the writer gets them."""
    record = record_row(applicant, key=key)
    message = outbox_row("已办结", applicant, record["id"])
    return [
        prepare_row(True, applications, record),
        prepare_row(True, outbox, message),
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
