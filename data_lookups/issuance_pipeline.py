"""Issuing on PostgreSQL in one pipeline: a whole group's issuance in one round trip.

The group-commit writer issues for many approvals in one transaction, holding
the applicants' locks, on facts it has checked are current. Done primitive by
primitive (:class:`data_lookups.issuance.DirectIssuer`), every issuance costs a
savepoint and several round trips, and the writer waits on each in turn. Here
each primitive becomes plain statements, queued, and :meth:`PipelinedIssuer.flush`
sends them all in one pipeline, then bumps the people's ``fact_versions`` in the
same round trip. The checks the primitives make on rows they read first are
conditions of the statements instead (``WHERE status = 'valid'``,
``balance >= amount``): a statement that changes no row, or one that breaks a
registry constraint, makes :meth:`~PipelinedIssuer.flush` raise
:class:`IssuanceConflict`. There is no savepoint to return to: the caller's
transaction is lost and must be rolled back (the group writer then retries
each application alone, and only the one at fault gets the error).

Money is computed by PostgreSQL's ``numeric``, which is exact to the cent.
Card numbers come from ``card_no_seq`` as in :func:`~data_lookups.issuance.issue_card`,
skipping numbers an import already uses; they are drawn in one statement for
as many cards as the caller expects to issue (a number drawn and not used is
never handed out: card numbers are unique, not gapless).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import exc

from approval_service.errors import IssuanceConflict, RegistryUnavailable
from data_lookups.database import connection_lost
from data_lookups.id_numbers import mask_id
from data_lookups.issuance import card_number
from data_lookups.models import CARD_NO_PREFIX

_CENT = Decimal("0.01")

_DRAW = (
    "SELECT v, EXISTS (SELECT 1 FROM senior_cards c WHERE c.card_no = "
    "%(prefix)s || lpad(v::text, greatest(10, length(v::text)), '0')) "
    "FROM (SELECT nextval('card_no_seq') AS v FROM generate_series(1, %(n)s)) AS drawn"
)
_ALLOWANCE = (
    "INSERT INTO allowances (id_number, status, start_date, monthly_amount, source, "
    "application_id) VALUES (%s, 'active', %s, %s, 'miaopi', %s)"
)
_CARD = (
    "INSERT INTO senior_cards (card_no, id_number, card_type, status, issued_on, expires_on, "
    "source, application_id) VALUES (%s, %s, %s, 'valid', %s, %s, 'miaopi', %s)"
)
_CANCEL = (
    "UPDATE senior_cards SET status = 'cancelled', cancel_reason = %s, cancelled_on = %s "
    "WHERE card_no = %s AND status = 'valid' AND id_number = %s"
)
# a withdrawal is recorded only if the account's update changed its row (one statement)
_WITHDRAWAL = (
    "WITH paid AS ({update} RETURNING id_number) "
    "INSERT INTO fund_withdrawals (id_number, kind, amount, withdrawn_on, application_id) "
    "SELECT id_number, %(kind)s, %(amount)s, %(on)s, %(application)s FROM paid"
)
_RENT = _WITHDRAWAL.format(
    update="UPDATE fund_accounts SET balance = balance - %(amount)s, "
    "last_rent_withdrawal_date = %(on)s "
    "WHERE id_number = %(id)s AND status = 'normal' AND balance >= %(amount)s"
)
_RETIREMENT = _WITHDRAWAL.format(
    update="UPDATE fund_accounts SET balance = 0, status = 'closed' "
    "WHERE id_number = %(id)s AND status NOT IN ('closed', 'frozen') AND balance = %(amount)s"
)
#: what breaking a registry constraint means, for the message
_CONSTRAINTS = {
    "uq_allowances_one_active": "the applicant already has an active allowance",
    "uq_senior_cards_one_valid": "the applicant already holds a valid card",
    "pk_senior_cards": "the card number is already in use",
    "ck_fund_accounts_balance": "the balance would go below zero",
}
_BUMP = (
    "INSERT INTO fact_versions (id_number, version) "
    "SELECT id, 1 FROM unnest(%s::text[]) AS id "
    "ON CONFLICT (id_number) DO UPDATE SET version = fact_versions.version + 1"
)


class PipelinedIssuer:
    """The issuance primitives, queued on one psycopg connection inside its transaction."""

    def __init__(self, driver: psycopg.Connection[Any], cards_expected: int = 0) -> None:
        self._driver = driver
        self._cards_wanted = cards_expected
        self._card_numbers: list[str] = []
        # (statement, parameters, message when it changes no row; None: any count will do)
        self._queued: list[tuple[str, Sequence[Any] | dict[str, Any], str | None]] = []
        self._changed: set[str] = set()
        self._broken = False  # a flush failed: the transaction must be rolled back

    # the primitives ------------------------------------------------------------
    def issue_allowance(
        self, id_number: str, start_date: date, monthly_amount: Decimal, application_id: str | None
    ) -> None:
        self._queue(_ALLOWANCE, (id_number, start_date, monthly_amount, application_id), None)
        self._changed.add(id_number)

    def issue_card(
        self,
        id_number: str,
        card_type: str,
        issued_on: date,
        expires_on: date,
        application_id: str | None,
    ) -> str:
        card_no = self._next_card_no()
        params = (card_no, id_number, card_type, issued_on, expires_on, application_id)
        self._queue(_CARD, params, None)
        self._changed.add(id_number)
        return card_no

    def cancel_card(self, card_no: str, reason: str, on: date, holder: str) -> None:
        if reason not in ("lost", "renewed"):
            raise ValueError("reason must be 'lost' or 'renewed'")
        refused = f"card {card_no} is not a valid card of the applicant"
        self._queue(_CANCEL, (reason, on, card_no, holder), refused)
        self._changed.add(holder)

    def record_rent_withdrawal(
        self, id_number: str, amount: Decimal, on: date, application_id: str | None
    ) -> None:
        amount = amount.quantize(_CENT)
        refused = f"rent withdrawal for {mask_id(id_number)}: "
        if amount < _CENT:
            raise IssuanceConflict(refused + "the amount is below one cent")
        self._queue(
            _RENT,
            self._withdrawal(id_number, "rent", amount, on, application_id),
            refused + "the account is not normal or the balance is short",
        )

    def close_fund_for_retirement(
        self, id_number: str, amount: Decimal, on: date, application_id: str | None
    ) -> None:
        amount = amount.quantize(_CENT)
        self._queue(
            _RETIREMENT,
            self._withdrawal(id_number, "retirement", amount, on, application_id),
            f"retirement withdrawal for {mask_id(id_number)}: "
            "the account is closed or frozen, or the balance moved",
        )

    # sending --------------------------------------------------------------------
    def flush(self) -> None:
        """Send everything queued and the version bumps in one pipeline; check each.

        After an :class:`IssuanceConflict` the rest of what was queued has been applied:
        the caller must roll the transaction back, and this issuer refuses more work.
        """
        self._check_usable()
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        changed, self._changed = sorted(self._changed), set()
        self._broken = True  # until every statement is known to have done its part
        with _translated(), self._driver.pipeline():
            cursors = [
                (self._driver.execute(sql, params, prepare=True), refused)
                for sql, params, refused in queued
            ]
            self._driver.execute(_BUMP, (changed,), prepare=False)
        for cursor, refused in cursors:
            if refused is not None and cursor.rowcount != 1:
                raise IssuanceConflict(refused)
        self._broken = False

    def _check_usable(self) -> None:
        if self._broken:
            raise IssuanceConflict(
                "an earlier issuance in this transaction was refused; roll it back first"
            )

    def _queue(
        self, statement: str, params: Sequence[Any] | dict[str, Any], refused: str | None
    ) -> None:
        self._check_usable()
        self._queued.append((statement, params, refused))

    def _withdrawal(
        self, id_number: str, kind: str, amount: Decimal, on: date, application_id: str | None
    ) -> dict[str, Any]:
        self._changed.add(id_number)
        return {
            "id": id_number,
            "kind": kind,
            "amount": amount,
            "on": on,
            "application": application_id,
        }

    def _next_card_no(self) -> str:
        self._check_usable()
        while not self._card_numbers:
            with _translated():
                rows = self._driver.execute(
                    _DRAW, {"prefix": CARD_NO_PREFIX, "n": max(self._cards_wanted, 1)}
                ).fetchall()
            # an imported card may use a drawn number: skip it, and draw again if short
            self._card_numbers = [card_number(int(v)) for v, taken in rows if not taken]
            self._card_numbers.reverse()  # handed out in the order drawn
        self._cards_wanted = max(self._cards_wanted - 1, 0)
        return self._card_numbers.pop()


@contextmanager
def _translated() -> Iterator[None]:
    """psycopg's errors as the registry's: a broken constraint is a conflict."""
    try:
        yield
    except psycopg.IntegrityError as error:
        constraint = error.diag.constraint_name or ""
        meaning = _CONSTRAINTS.get(constraint, "it would break a registry constraint")
        raise IssuanceConflict(f"cannot issue: {meaning}") from error
    except psycopg.OperationalError as error:
        if not connection_lost(error):  # a deadlock, say: this transaction's, retried alone
            raise exc.OperationalError("issuing", None, error) from error
        raise RegistryUnavailable("the registry database cannot be reached; retry later") from error
