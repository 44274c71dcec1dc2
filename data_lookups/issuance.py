"""Issuing results into the registries, inside the caller's transaction.

Each primitive takes an open :class:`~sqlalchemy.Connection` whose transaction
the caller owns, so the decision record can be written and committed together
with what was issued. Each one:

- runs in a SAVEPOINT, so that a constraint violation (already active, already
  valid, balance changed) raises :class:`IssuanceConflict` and leaves the
  caller's transaction usable (to record a rejection instead, or roll back);
- bumps the person's ``fact_versions`` row in the same transaction, so that no
  cached fact bundle read before the commit is used after it (see
  :mod:`data_lookups.fact_cache`). Calling ``cache.invalidate`` after the commit
  is optional: it frees the entry early.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from decimal import Decimal
from typing import Protocol, TypeVar

from sqlalchemy import Connection, exc, insert, select, text, update

from approval_service.errors import IssuanceConflict
from data_lookups.id_numbers import mask_id
from data_lookups.models import (
    CARD_NO_PREFIX,
    Allowance,
    FundAccount,
    FundWithdrawal,
    SeniorCard,
)

T = TypeVar("T")
_CENT = Decimal("0.01")
_BUMP = (
    "INSERT INTO fact_versions (id_number, version) VALUES (:id, 1) "
    "ON CONFLICT (id_number) DO UPDATE SET version = fact_versions.version + 1"
)


def bump_versions(conn: Connection, id_numbers: Iterable[str]) -> None:
    """Mark the people's registry rows as changed (call in the changing transaction)."""
    params = [{"id": i} for i in sorted(set(id_numbers))]
    if params:
        conn.execute(text(_BUMP), params)


def _in_savepoint(conn: Connection, what: str, work: Callable[[], T]) -> T:
    try:
        with conn.begin_nested():
            return work()
    except exc.IntegrityError as error:
        raise IssuanceConflict(f"{what}: would break a registry constraint") from error


def issue_allowance(
    conn: Connection,
    id_number: str,
    start_date: date,
    monthly_amount: Decimal,
    application_id: str | None,
) -> None:
    """Create the person's active allowance; :class:`IssuanceConflict` if one is active."""

    def work() -> None:
        conn.execute(
            insert(Allowance).values(
                id_number=id_number,
                status="active",
                start_date=start_date,
                monthly_amount=monthly_amount,
                source="miaopi",
                application_id=application_id,
            )
        )
        bump_versions(conn, [id_number])

    _in_savepoint(conn, f"allowance for {mask_id(id_number)} (one is already active)", work)


def card_number(number: int) -> str:
    """The card number for a drawn counter value: the prefix and at least ten digits."""
    return f"{CARD_NO_PREFIX}{number:010d}"


def _next_card_no(conn: Connection) -> str:
    while True:
        if conn.dialect.name == "postgresql":
            number = conn.execute(text("SELECT nextval('card_no_seq')")).scalar_one()
        else:
            number = conn.execute(
                text(
                    "UPDATE card_no_counter SET last_value = last_value + 1 WHERE id = 1 "
                    "RETURNING last_value"
                )
            ).scalar_one()
        card_no = card_number(int(number))
        taken = conn.execute(select(SeniorCard.card_no).where(SeniorCard.card_no == card_no))
        if taken.first() is None:  # an imported card may use the same number: skip it
            return card_no


def issue_card(
    conn: Connection,
    id_number: str,
    card_type: str,
    issued_on: date,
    expires_on: date,
    application_id: str | None,
) -> str:
    """Create a valid card and return its new, never reused number.

    :class:`IssuanceConflict` if the person already holds a valid card (cancel it first).
    """

    def work() -> str:
        card_no = _next_card_no(conn)
        conn.execute(
            insert(SeniorCard).values(
                card_no=card_no,
                id_number=id_number,
                card_type=card_type,
                status="valid",
                issued_on=issued_on,
                expires_on=expires_on,
                source="miaopi",
                application_id=application_id,
            )
        )
        bump_versions(conn, [id_number])
        return card_no

    return _in_savepoint(conn, f"card for {mask_id(id_number)} (one is already valid)", work)


def cancel_card(
    conn: Connection, card_no: str, reason: str, on: date, holder: str | None = None
) -> None:
    """Cancel a valid card as ``lost`` or ``renewed``; :class:`IssuanceConflict` if it is
    not valid (or, with ``holder``, not that person's)."""
    if reason not in ("lost", "renewed"):
        raise ValueError("reason must be 'lost' or 'renewed'")
    query = update(SeniorCard).where(SeniorCard.card_no == card_no, SeniorCard.status == "valid")
    if holder is not None:
        query = query.where(SeniorCard.id_number == holder)

    def work() -> None:
        found = conn.execute(
            query.values(status="cancelled", cancel_reason=reason, cancelled_on=on).returning(
                SeniorCard.id_number
            )
        ).scalar_one_or_none()
        if found is None:
            raise IssuanceConflict(f"card {card_no} is not a valid card of the applicant")
        bump_versions(conn, [found])

    _in_savepoint(conn, f"cancelling card {card_no}", work)


def _withdraw(
    conn: Connection,
    id_number: str,
    amount: Decimal,
    on: date,
    application_id: str | None,
    kind: str,
) -> None:
    """Read the account (locked), compute the new balance in ``Decimal``, write it back.

    The arithmetic happens here, not in SQL: SQLite keeps NUMERIC as binary
    floating point, where ``balance - amount`` could drift off the cent.
    """
    account = FundAccount.__table__.c
    query = select(account.status, account.balance).where(account.id_number == id_number)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    amount = amount.quantize(_CENT)
    refused = f"{kind} withdrawal for {mask_id(id_number)}: "
    if row is None:
        raise IssuanceConflict(refused + "there is no fund account")
    status, balance = row[0], Decimal(row[1]).quantize(_CENT)
    if kind == "rent":
        if status != "normal" or not _CENT <= amount <= balance:
            raise IssuanceConflict(refused + "the account is not normal or the balance is short")
        changes: dict[str, object] = {"balance": balance - amount, "last_rent_withdrawal_date": on}
    else:
        if status in ("closed", "frozen") or amount != balance:
            raise IssuanceConflict(
                refused + "the account is closed or frozen, or the balance moved"
            )
        changes = {"balance": Decimal("0.00"), "status": "closed"}
    written = conn.execute(
        update(FundAccount)
        .where(account.id_number == id_number, account.balance == balance)
        .values(**changes)
    )
    if written.rowcount != 1:
        raise IssuanceConflict(refused + "the balance changed meanwhile")
    conn.execute(
        insert(FundWithdrawal).values(
            id_number=id_number,
            kind=kind,
            amount=amount,
            withdrawn_on=on,
            application_id=application_id,
        )
    )
    bump_versions(conn, [id_number])


def record_rent_withdrawal(
    conn: Connection, id_number: str, amount: Decimal, on: date, application_id: str | None
) -> None:
    """Record a rent withdrawal: lower the balance, set the last rent withdrawal date."""
    _in_savepoint(
        conn,
        f"rent withdrawal for {mask_id(id_number)}",
        lambda: _withdraw(conn, id_number, amount, on, application_id, "rent"),
    )


def close_fund_for_retirement(
    conn: Connection, id_number: str, amount: Decimal, on: date, application_id: str | None
) -> None:
    """Pay out the whole balance (``amount`` must equal it) and close the account."""
    _in_savepoint(
        conn,
        f"retirement withdrawal for {mask_id(id_number)}",
        lambda: _withdraw(conn, id_number, amount, on, application_id, "retirement"),
    )


class Issuer(Protocol):
    """The primitives above, bound to one transaction (see :class:`DirectIssuer` and
    :class:`data_lookups.issuance_pipeline.PipelinedIssuer`). An issuer may queue its
    work: :meth:`flush` sends it, and raises :class:`IssuanceConflict` for any of it."""

    def issue_allowance(
        self, id_number: str, start_date: date, monthly_amount: Decimal, application_id: str | None
    ) -> None: ...

    def issue_card(
        self,
        id_number: str,
        card_type: str,
        issued_on: date,
        expires_on: date,
        application_id: str | None,
    ) -> str: ...

    def cancel_card(self, card_no: str, reason: str, on: date, holder: str) -> None: ...

    def record_rent_withdrawal(
        self, id_number: str, amount: Decimal, on: date, application_id: str | None
    ) -> None: ...

    def close_fund_for_retirement(
        self, id_number: str, amount: Decimal, on: date, application_id: str | None
    ) -> None: ...

    def flush(self) -> None: ...


class DirectIssuer:
    """Each primitive at once, in its savepoint: the caller's transaction survives a
    conflict (an officer's decision, SQLite, anything not on the group writer's hot path)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def issue_allowance(
        self, id_number: str, start_date: date, monthly_amount: Decimal, application_id: str | None
    ) -> None:
        issue_allowance(self.conn, id_number, start_date, monthly_amount, application_id)

    def issue_card(
        self,
        id_number: str,
        card_type: str,
        issued_on: date,
        expires_on: date,
        application_id: str | None,
    ) -> str:
        return issue_card(self.conn, id_number, card_type, issued_on, expires_on, application_id)

    def cancel_card(self, card_no: str, reason: str, on: date, holder: str) -> None:
        cancel_card(self.conn, card_no, reason, on, holder)

    def record_rent_withdrawal(
        self, id_number: str, amount: Decimal, on: date, application_id: str | None
    ) -> None:
        record_rent_withdrawal(self.conn, id_number, amount, on, application_id)

    def close_fund_for_retirement(
        self, id_number: str, amount: Decimal, on: date, application_id: str | None
    ) -> None:
        close_fund_for_retirement(self.conn, id_number, amount, on, application_id)

    def flush(self) -> None:
        """Nothing is queued: each primitive ran when called."""
