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

from approval_service.errors import IssuanceConflict, RegistryUnavailable
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
_RENT = (
    "UPDATE fund_accounts SET balance = balance - %(amount)s, last_rent_withdrawal_date = %(on)s "
    "WHERE id_number = %(id)s AND status = 'normal' AND balance >= %(amount)s"
)
_RETIREMENT = (
    "UPDATE fund_accounts SET balance = 0, status = 'closed' "
    "WHERE id_number = %(id)s AND status NOT IN ('closed', 'frozen') AND balance = %(amount)s"
)
_WITHDRAWAL = (
    "INSERT INTO fund_withdrawals (id_number, kind, amount, withdrawn_on, application_id) "
    "VALUES (%s, %s, %s, %s, %s)"
)
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
            {"id": id_number, "amount": amount, "on": on},
            refused + "the account is not normal or the balance is short",
        )
        self._withdrawal(id_number, "rent", amount, on, application_id)

    def close_fund_for_retirement(
        self, id_number: str, amount: Decimal, on: date, application_id: str | None
    ) -> None:
        amount = amount.quantize(_CENT)
        self._queue(
            _RETIREMENT,
            {"id": id_number, "amount": amount},
            f"retirement withdrawal for {mask_id(id_number)}: "
            "the account is closed or frozen, or the balance moved",
        )
        self._withdrawal(id_number, "retirement", amount, on, application_id)

    # sending --------------------------------------------------------------------
    def flush(self) -> None:
        """Send everything queued and the version bumps in one pipeline; check each."""
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        changed, self._changed = sorted(self._changed), set()
        with _translated(), self._driver.pipeline():
            cursors = [
                (self._driver.execute(sql, params, prepare=True), refused)
                for sql, params, refused in queued
            ]
            self._driver.execute(_BUMP, (changed,), prepare=False)
        for cursor, refused in cursors:
            if refused is not None and cursor.rowcount != 1:
                raise IssuanceConflict(refused)

    def _queue(
        self, statement: str, params: Sequence[Any] | dict[str, Any], refused: str | None
    ) -> None:
        self._queued.append((statement, params, refused))

    def _withdrawal(
        self, id_number: str, kind: str, amount: Decimal, on: date, application_id: str | None
    ) -> None:
        self._queue(_WITHDRAWAL, (id_number, kind, amount, on, application_id), None)
        self._changed.add(id_number)

    def _next_card_no(self) -> str:
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
        constraint = error.diag.constraint_name or "a registry constraint"
        raise IssuanceConflict(f"issuing would break {constraint}") from error
    except psycopg.OperationalError as error:
        raise RegistryUnavailable("the registry database cannot be reached; retry later") from error
