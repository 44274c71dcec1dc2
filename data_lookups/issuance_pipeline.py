"""Issuing on PostgreSQL in one batch: a whole group's issuance in one round trip.

The group-commit writer issues for many approvals in one transaction, holding
the applicants' locks, on facts it has checked are current. Done primitive by
primitive (:class:`data_lookups.issuance.DirectIssuer`), every issuance costs a
savepoint and several round trips, and the writer waits on each in turn. Here
each primitive becomes plain statements, queued, and sent all at once with a bump
of the people's ``fact_versions``: by :meth:`PipelinedIssuer.flush` in a batch
of their own, or by :meth:`PipelinedIssuer.send` into the caller's batch
(:mod:`data_lookups.statement_batch`),
which may go on with the group's records and the ``COMMIT`` in the same round
trip. The checks the primitives make on rows they read first are conditions of
the statements instead (``WHERE status = 'valid'``, ``balance >= amount``), and
PostgreSQL itself fails the transaction when such a statement changes no row
(``issuance_expect_one``, migration 0013): nothing need be read back before the
commit. A refusal, or a statement that breaks a registry constraint, is raised
as :class:`IssuanceConflict` (by :func:`translated`). There is no savepoint to
return to: the caller's transaction is lost and must be rolled back (the group
writer then does the group the long way, or each application alone, and only the
one at fault gets the error).

Money is computed by PostgreSQL's ``numeric``, which is exact to the cent.
Card numbers come from ``card_no_seq`` as in :func:`~data_lookups.issuance.issue_card`,
skipping numbers an import already uses; they are drawn in one statement for
as many cards as the caller expects to issue, and more for a writer to keep
(:class:`SpareCardNumbers`): a number drawn is nobody else's, since the sequence
never gives it again, so a group may issue with numbers drawn by an earlier one
and need no draw of its own. A number drawn and never used is simply skipped:
card numbers are unique, not gapless.
"""

from __future__ import annotations

import threading
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
from data_lookups.statement_batch import StatementBatch

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
# a conditional statement fails its transaction unless it changed exactly one row
# (migration 0013), so nothing need be read back before the COMMIT is sent
_EXPECT_ONE = "SELECT issuance_expect_one(count(*), %(refused)s) FROM changed"
_CANCEL = (
    "WITH changed AS (UPDATE senior_cards SET status = 'cancelled', "
    "cancel_reason = %(reason)s, cancelled_on = %(on)s "
    "WHERE card_no = %(card)s AND status = 'valid' AND id_number = %(holder)s RETURNING 1) "
    + _EXPECT_ONE
)
# a withdrawal is recorded only if the account's update changed its row (one statement)
_WITHDRAWAL = (
    "WITH paid AS ({update} RETURNING id_number), changed AS ("
    "INSERT INTO fund_withdrawals (id_number, kind, amount, withdrawn_on, application_id) "
    "SELECT id_number, %(kind)s, %(amount)s, %(on)s, %(application)s FROM paid RETURNING 1) "
    + _EXPECT_ONE
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

    def __init__(
        self,
        driver: psycopg.Connection[Any],
        cards_expected: int = 0,
        card_numbers: Sequence[str] = (),
    ) -> None:
        """``cards_expected``: how many numbers to draw ahead (:meth:`draw_ahead`);
        ``card_numbers``: numbers drawn earlier, handed out first, in this order."""
        self._driver = driver
        self._cards_wanted = cards_expected
        self._card_numbers: list[str] = list(reversed(card_numbers))  # popped from the end
        self._drawn: tuple[StatementBatch, int] | None = None  # a draw sent ahead, unread
        self._queued: list[tuple[str, Sequence[Any] | dict[str, Any]]] = []
        self._changed: set[str] = set()
        self._broken = False  # a send failed: the transaction must be rolled back

    # the primitives ------------------------------------------------------------
    def issue_allowance(
        self, id_number: str, start_date: date, monthly_amount: Decimal, application_id: str | None
    ) -> None:
        self._queue(_ALLOWANCE, (id_number, start_date, monthly_amount, application_id))
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
        self._queue(_CARD, params)
        self._changed.add(id_number)
        return card_no

    def cancel_card(self, card_no: str, reason: str, on: date, holder: str) -> None:
        if reason not in ("lost", "renewed"):
            raise ValueError("reason must be 'lost' or 'renewed'")
        refused = f"card {card_no} is not a valid card of the applicant"
        params = {"reason": reason, "on": on, "card": card_no, "holder": holder}
        self._queue(_CANCEL, params | {"refused": refused})
        self._changed.add(holder)

    def record_rent_withdrawal(
        self, id_number: str, amount: Decimal, on: date, application_id: str | None
    ) -> None:
        amount = amount.quantize(_CENT)
        refused = f"rent withdrawal for {mask_id(id_number)}: "
        if amount < _CENT:
            raise IssuanceConflict(refused + "the amount is below one cent")
        refused += "the account is not normal or the balance is short"
        self._queue(_RENT, self._withdrawal(id_number, "rent", amount, on, application_id, refused))

    def close_fund_for_retirement(
        self, id_number: str, amount: Decimal, on: date, application_id: str | None
    ) -> None:
        amount = amount.quantize(_CENT)
        refused = (
            f"retirement withdrawal for {mask_id(id_number)}: "
            "the account is closed or frozen, or the balance moved"
        )
        self._queue(
            _RETIREMENT,
            self._withdrawal(id_number, "retirement", amount, on, application_id, refused),
        )

    # sending --------------------------------------------------------------------
    def flush(self) -> None:
        """Send everything queued and the version bumps in one batch, and wait for it.

        After an :class:`IssuanceConflict` the transaction is lost: PostgreSQL refuses
        every statement until it is rolled back, and until then so does this issuer.
        """
        self._check_usable()
        if not self._queued:
            return
        batch = StatementBatch(self._driver)
        with translated():
            self.send(batch)
            batch.run()

    def send(self, batch: StatementBatch) -> None:
        """Add everything queued, and the version bumps, to the caller's ``batch``.

        The caller may add more after it (the group's records, the ``COMMIT``), runs
        the batch and translates what it raises with :func:`translated`: a conditional
        statement that changed no row fails the transaction there (migration 0013), so
        a ``COMMIT`` in the same batch is never carried out after a refusal.
        """
        self._check_usable()
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        changed, self._changed = sorted(self._changed), set()
        # a statement that could not even be queued (a parameter psycopg cannot adapt)
        # leaves the batch half-built: refuse more work. A refusal by PostgreSQL is seen
        # later, in the transaction's status (see _check_usable).
        self._broken = True
        for sql, params in queued:
            batch.add(sql, params)
        batch.add(_BUMP, (changed,), prepare=False)  # see group_store._CUSTOM_PLANS
        self._broken = False

    def _check_usable(self) -> None:
        if self._broken or self._driver.info.transaction_status == _FAILED:
            raise IssuanceConflict(
                "an earlier issuance in this transaction was refused; roll it back first"
            )

    def _queue(self, statement: str, params: Sequence[Any] | dict[str, Any]) -> None:
        self._check_usable()
        self._queued.append((statement, params))

    def _withdrawal(
        self,
        id_number: str,
        kind: str,
        amount: Decimal,
        on: date,
        application_id: str | None,
        refused: str,
    ) -> dict[str, Any]:
        self._changed.add(id_number)
        return {
            "id": id_number,
            "kind": kind,
            "amount": amount,
            "on": on,
            "application": application_id,
            "refused": refused,
        }

    def draw_ahead(self, batch: StatementBatch) -> None:
        """Draw the numbers of the cards expected in the caller's ``batch`` (the group's
        first round trip), so that issuing the first card waits for nothing."""
        if self._cards_wanted and self._drawn is None and not self._card_numbers:
            self._drawn = (batch, batch.add(_DRAW, self._draw_params()))

    def unused_card_numbers(self) -> list[str]:
        """The numbers given or drawn and not handed out, in order (a draw sent ahead is
        read now: its result arrived with the batch that sent it)."""
        drawn, self._drawn = self._drawn, None
        if drawn is not None:
            try:
                rows = drawn[0].rows(drawn[1])
            except psycopg.Error:  # its batch failed: there is nothing to read
                rows = []
            self._card_numbers[:0] = reversed(_free(rows))  # after the ones already held
        return list(reversed(self._card_numbers))

    def _draw_params(self) -> dict[str, Any]:
        return {"prefix": CARD_NO_PREFIX, "n": max(self._cards_wanted, 1)}

    def _next_card_no(self) -> str:
        self._check_usable()
        while not self._card_numbers:
            with translated():
                drawn, self._drawn = self._drawn, None
                if drawn is None:
                    draw = StatementBatch(self._driver)
                    drawn = (draw, draw.add(_DRAW, self._draw_params()))
                    draw.run()
                rows = drawn[0].rows(drawn[1])
            self._card_numbers = _free(rows)  # draw again if an import took them all
            self._card_numbers.reverse()  # handed out in the order drawn
        self._cards_wanted = max(self._cards_wanted - 1, 0)
        return self._card_numbers.pop()


def _free(drawn: list[tuple[Any, ...]]) -> list[str]:
    """The card numbers of a draw's rows ``(value, taken)``, in the order drawn: a number
    an imported card already uses is skipped."""
    return [card_number(int(value)) for value, taken in drawn if not taken]


class SpareCardNumbers:
    """Card numbers the group writers of a process drew and have not used yet, kept
    across their groups.

    The long way of a group draws its cards' numbers with its locks; drawing
    :meth:`wanted` more at the same time costs nothing, and lets the next small groups
    that issue cards go in one round trip with numbers already at hand. Thread-safe:
    the writer thread and the event loop's writer share it. Numbers a refused group
    tried to use are not given back (one of them may be why it was refused: an import
    took it since).
    """

    def __init__(self, keep: int = 32) -> None:
        self.keep = keep
        self._numbers: list[str] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._numbers)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._numbers))

    def wanted(self) -> int:
        """How many to draw with the next long-way group to have :attr:`keep` at hand."""
        return max(self.keep - len(self._numbers), 0)

    def take_exactly(self, n: int) -> list[str] | None:
        """The first ``n`` numbers, or None (and none taken) if fewer are kept."""
        with self._lock:
            if len(self._numbers) < n:
                return None
            taken, self._numbers = self._numbers[:n], self._numbers[n:]
        return taken

    def give(self, numbers: Sequence[str]) -> None:
        """Keep these (unused) numbers, after the ones already kept."""
        with self._lock:
            self._numbers.extend(numbers)


_FAILED = psycopg.pq.TransactionStatus.INERROR
#: tables the group writer inserts into besides issuing: their constraints are not conflicts
RECORD_TABLES = frozenset({"applications", "outbox"})


def conflict_of(error: psycopg.IntegrityError) -> IssuanceConflict | None:
    """The issuance conflict an integrity error stands for: a refused conditional
    statement, or a broken registry constraint; None for a record's own constraint."""
    diag = error.diag
    if diag.constraint_name == REFUSED:
        return IssuanceConflict(diag.message_primary or "the issuance was refused")
    if diag.table_name in RECORD_TABLES:
        return None
    meaning = _CONSTRAINTS.get(diag.constraint_name or "", "it would break a registry constraint")
    return IssuanceConflict(f"cannot issue: {meaning}")


#: the constraint name migration 0013's ``issuance_expect_one`` raises with
REFUSED = "issuance_refused"


@contextmanager
def translated(statement: str = "issuing") -> Iterator[None]:
    """psycopg's errors on the group writer's connection as the service's: a refusal or
    a broken registry constraint is an :class:`IssuanceConflict`, a record's own
    constraint SQLAlchemy's ``IntegrityError`` (``apply`` answers a repeated key from it),
    a lost connection :class:`RegistryUnavailable`; ``statement`` names what was run."""
    try:
        yield
    except psycopg.IntegrityError as error:
        conflict = conflict_of(error)
        if conflict is None:
            raise exc.IntegrityError(statement, None, error) from error
        raise conflict from error
    except psycopg.OperationalError as error:
        if not connection_lost(error):  # a deadlock, say: this transaction's, retried alone
            raise exc.OperationalError(statement, None, error) from error
        raise RegistryUnavailable("the registry database cannot be reached; retry later") from error
