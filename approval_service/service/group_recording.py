"""Recording in groups: the group-commit writer's side of second approval.

The group-commit writer (:mod:`approval_service.service.group_commit`) hands
:meth:`GroupRecorder.record_group` many applications at once, each decided on
cached facts (:mod:`approval_service.service.applications`), in one write
transaction. It takes every person's lock (PostgreSQL: transaction-scoped
advisory locks in ID order; SQLite: the write transaction itself), checks their
stamps, and decides again on facts read in the transaction wherever the cached
stamp is behind or an earlier application of the same group issued to the same
person. An approval that issues does so there, under the lock, and the decision
record and its notification are inserted in the same transaction; the callers
are answered only after the commit. A second application racing the first waits
for the lock, sees what the first issued, and is rejected with the right reason.
Registry constraints (one active allowance, one valid card) back this up.
Nothing is half-issued: issuance and record commit together or not at all.

On PostgreSQL a small group that needs nothing read first is written in one
round trip, PostgreSQL checking the stamps; if it refuses, the group goes the
long way, stamps and earlier answers read first (:mod:`group_store`). A group
holding an ``Idempotency-Key`` this writer recorded lately goes the long way at
once (:class:`RecentKeys`): PostgreSQL would refuse it, a round trip for nothing.
The writer on an event loop (:mod:`loop_writer`) takes that one round trip there
(:meth:`GroupRecorder.plan_at_once_on_loop`); a group it cannot write so is
marked and goes the long way on the writer thread. Both writers share the spare
card numbers and the recent keys, each behind a lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from approval_service.service import group_store, records
from approval_service.service.issuing import ACTIONS, IssueContext
from approval_service.service.pending import (
    Outcome,
    Pending,
    decision_rows,
    first_answer,
    issues,
    issues_a_card,
    prepared,
)
from approval_service.service.prepared_rows import Prepared
from data_lookups.database import is_postgres
from data_lookups.facts import Stamp
from data_lookups.issuance import Issuer
from data_lookups.issuance_pipeline import PipelinedIssuer, SpareCardNumbers

log = logging.getLogger(__name__)


def _cards(group: Sequence[Pending]) -> int:
    """How many cards the group's decisions, as made, would issue."""
    return sum(issues_a_card(p.decider, p.decision) for p in group)


def _made_old(group: Sequence[Pending], outcomes: Sequence[Outcome]) -> list[str]:
    """The people whose cache entries a committed group made old."""
    return [
        p.app.applicant_id for p, o in zip(group, outcomes, strict=True) if o.issued or o.redecided
    ]


Key = tuple[str, str]  # (channel, Idempotency-Key)


class RecentKeys:
    """The last ``size`` keys this writer recorded, oldest forgotten first (a portal's
    retry comes within seconds; 16,384 keys is several seconds of a busy worker, about
    4 MB).

    Only a hint for the way a group goes: a key found here is taken, so a group
    holding it goes the long way at once, which reads its first answer. A key
    not found here may still be taken (by another worker, or long ago), and
    PostgreSQL then refuses the group's one round trip, as before. A key kept
    here whose group then failed only costs its repeat the long way. Shared by
    the writer thread and the event loop's writer.
    """

    def __init__(self, size: int = 16_384) -> None:
        self._keys: OrderedDict[Key, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, keys: Iterable[Key]) -> None:
        with self._lock:
            for key in keys:
                self._keys[key] = None
                self._keys.move_to_end(key)
            while len(self._keys) > self._size:
                self._keys.popitem(last=False)


def _keys(group: Sequence[Pending]) -> list[Key]:
    return [(p.channel, p.idempotency_key) for p in group if p.idempotency_key is not None]


if TYPE_CHECKING:  # the container builds the group committer around this recorder
    from approval_service.service.container import Container


class GroupRecorder:
    """What the group-commit writer does with each group (its ``process`` and hook)."""

    def __init__(self, container: Container) -> None:
        self.c = container
        self._postgres = is_postgres(container.engine)
        self.spare_cards = SpareCardNumbers()  # PostgreSQL: drawn ahead by the long way
        self.recent_keys = RecentKeys()  # PostgreSQL: keys of the groups recorded lately

    def record_group(self, conn: Connection, group: Sequence[Pending]) -> list[Outcome]:
        """Check, issue, record and commit a group of applications on ``conn``.

        On PostgreSQL the group begins and commits its own transaction in its batches
        (:mod:`group_store`); the writer's own commit then has nothing left to do. On
        SQLite it runs in the writer's.

        The people are locked (PostgreSQL), then their stamps checked. An application
        whose facts came from the cache at the current stamp keeps its decision;
        otherwise (the cache was behind, or an earlier application of this group issued
        to the same person) it is decided again on facts read here. Approvals that issue
        do so now, under the lock, and every decision record and notification is
        inserted at once, and on PostgreSQL committed in the same round trip (see
        :mod:`group_store`). Records built before the writer are used as they are
        unless the application was decided again or issuing added to its result (a
        card number). A small group goes at once (one round trip) when it can, with
        card numbers drawn ahead by earlier groups (:attr:`spare_cards`).
        """
        started = time.perf_counter()
        path: str | None = None  # the way the group went, counted once it is known
        timed = "failed"  # what the group's time is counted under, if it raises
        try:
            numbers = self._at_once_numbers(group)
            if numbers is not None:
                outcomes = self._record_at_once(conn, group, numbers)
                if outcomes is not None:
                    path = timed = "at_once"
                    self._remember_keys(group)
                    return outcomes
                path = "refused_at_once"
            elif any(p.refused_at_once is not None for p in group):
                path = "refused_at_once"  # refused on the event loop's writer: its time
                started -= max(p.refused_at_once or 0.0 for p in group)  # counted too
            else:
                path = "checked"
            outcomes = self._record_checked(conn, group)
            timed = path
            self._remember_keys(group)
            return outcomes
        finally:
            self._count(path, timed, started)

    def _remember_keys(self, group: Sequence[Pending]) -> None:
        """Keep the group's keys, so that a repeat goes the long way at once (PostgreSQL;
        on SQLite every group goes that way)."""
        if self._postgres:
            self.recent_keys.add(_keys(group))

    def _count(self, path: str | None, timed: str, started: float) -> None:
        """Count the group's way and time. On PostgreSQL the group has committed by now,
        and nothing may fail after that (the writer would do the group again): never
        raises."""
        metrics = self.c.metrics
        try:
            if path is not None:
                metrics.count(metrics.labelled(metrics.groups, path))
            metrics.observe(
                metrics.labelled(metrics.group_seconds, timed), time.perf_counter() - started
            )
        except Exception:
            log.exception("counting a group failed")

    def goes_at_once(self, group: Sequence[Pending]) -> bool:
        """Whether a group may go in one round trip: a small PostgreSQL group that needs
        nothing read first (its cards' numbers at hand, nobody twice, no key twice nor
        one recorded lately, one epoch) and was not refused at once already."""
        if not self._postgres or len(group) > group_store.AT_ONCE_MAX:
            return False
        keyed = _keys(group)
        return (
            _cards(group) <= len(self.spare_cards)
            and len({p.app.applicant_id for p in group}) == len(group)
            and len(set(keyed)) == len(keyed)
            and not any(key in self.recent_keys for key in keyed)
            and len({p.stamp.epoch for p in group}) == 1
            and all(p.refused_at_once is None for p in group)
        )

    def _at_once_numbers(self, group: Sequence[Pending]) -> list[str] | None:
        """The card numbers for a group that :meth:`goes_at_once`, taken from
        :attr:`spare_cards`; None if it does not (or the other writer took them since)."""
        if not self.goes_at_once(group):
            return None
        return self.spare_cards.take_exactly(_cards(group))

    def _record_at_once(
        self, conn: Connection, group: Sequence[Pending], numbers: list[str]
    ) -> list[Outcome] | None:
        """The group in one round trip, on the decisions made from the cache, if every
        stamp is still current; None (nothing written) if PostgreSQL refused any of it,
        or if issuing on the cached facts failed here (the long way, on checked facts,
        then either succeeds or raises what is really wrong)."""
        built = self._build_at_once(conn, group, numbers)
        if built is None or not group_store.write_at_once(conn, *built[:3]):
            return None
        return built[3]

    def plan_at_once_on_loop(
        self, group: Sequence[Pending]
    ) -> Callable[[Connection], Awaitable[list[Outcome] | None]] | None:
        """:meth:`record_group`'s one round trip, for the event loop's writer
        (:mod:`loop_writer`) to await there, for a group that :meth:`goes_at_once`,
        with its card numbers taken now (the writer thread cannot take them before it
        is sent); None if the group does not go at once."""
        numbers = self._at_once_numbers(group)
        if numbers is None:
            return None
        return partial(self._record_at_once_on_loop, group, numbers)

    async def _record_at_once_on_loop(
        self, group: Sequence[Pending], numbers: list[str], conn: Connection
    ) -> list[Outcome] | None:
        """The planned round trip. None: nothing was written (PostgreSQL refused it), and
        the group, marked with the time it took, goes the long way on the writer thread,
        which counts it."""
        started = time.perf_counter()
        try:
            built = self._build_at_once(conn, group, numbers)
            written = built is not None and await group_store.awrite_at_once(conn, *built[:3])
        except BaseException:
            self._count(None, "failed", started)
            raise
        if built is not None and written:
            self._remember_keys(group)
            self._count("at_once", "at_once", started)
            return built[3]
        spent = time.perf_counter() - started
        for p in group:
            p.refused_at_once = spent
        return None

    def _build_at_once(
        self, conn: Connection, group: Sequence[Pending], numbers: list[str]
    ) -> tuple[dict[str, Stamp], Issuer, list[Prepared], list[Outcome]] | None:
        """What a group sends at once (its stamps, issuer and rows) and its outcomes, or
        None if issuing on the cached facts failed (unchecked facts: the long way sees)."""
        stamps = {p.app.applicant_id: p.stamp for p in group}
        issuer = group_store.issuer(conn, cards_expected=0, card_numbers=numbers)
        outcomes: list[Outcome] = []
        rows: list[Prepared] = []
        try:
            for p in group:
                outcome, built = self._record_one(conn, issuer, p, stamps, set())
                outcomes.append(outcome)
                rows.extend(built)
        except Exception:  # the facts were not checked yet: let the long way see
            log.debug("issuing at once failed: the group goes the long way", exc_info=True)
            return None
        finally:  # numbers it used are dropped, even if refused: one may be why
            self._keep_unused_cards(issuer)
        return stamps, issuer, rows, outcomes

    def _keep_unused_cards(self, issuer: Issuer) -> None:
        if isinstance(issuer, PipelinedIssuer):
            self.spare_cards.give(issuer.unused_card_numbers())

    def _record_checked(self, conn: Connection, group: Sequence[Pending]) -> list[Outcome]:
        """The group the long way: stamps and earlier answers read under the locks first."""
        people = [p.app.applicant_id for p in group]
        keyed = _keys(group)
        wanted = _cards(group) + (self.spare_cards.wanted() if self._postgres else 0)
        issuer = group_store.issuer(conn, cards_expected=wanted)
        stamps, earlier = group_store.open_group(conn, self.c.sql_facts, people, keyed, issuer)
        changed: set[str] = set()  # people this group has issued to
        outcomes: list[Outcome] = []
        rows: list[Prepared] = []
        for p in group:
            key = None if p.idempotency_key is None else (p.channel, p.idempotency_key)
            if key is not None and key in earlier:  # a repeat: the first answer, nothing new
                document = first_answer(earlier[key], p.digest, self.c.clock.zone, self.c.calendar)
                outcomes.append(Outcome(document, False, "", False, False))
                continue
            outcome, built = self._record_one(conn, issuer, p, stamps, changed)
            outcomes.append(outcome)
            if key is not None:  # its twin later in this group gets the same answer
                earlier[key] = (p.digest, {"document": outcome.document})
            rows.extend(built)
        # kept before the commit: nothing may fail once the group is durable, or the
        # writer would take the group for failed and do its entries again, one by one
        self._keep_unused_cards(issuer)
        group_store.finish_group(conn, issuer, rows)  # on PostgreSQL this commits
        return outcomes

    def after_commit(self, group: Sequence[Pending], outcomes: Sequence[Outcome]) -> None:
        """Drop cache entries the group made old (an early free; stamps keep reads right)."""
        old = _made_old(group, outcomes)
        if old:
            self.c.facts.invalidate(old)

    async def after_commit_on_loop(
        self, group: Sequence[Pending], outcomes: Sequence[Outcome]
    ) -> None:
        """:meth:`after_commit` for the applications of an event loop, on that loop: the
        Redis round trip no longer holds up the writer's next group."""
        old = _made_old(group, outcomes)
        if old:
            await self.c.facts.ainvalidate(old)

    def _record_one(
        self,
        conn: Connection,
        issuer: Issuer,
        p: Pending,
        stamps: Mapping[str, Stamp],
        changed: set[str],
    ) -> tuple[Outcome, list[Prepared]]:
        policy = p.decider.policy
        person = p.app.applicant_id
        facts, decision = p.facts, p.decision
        redecided = stamps[person] != p.stamp or person in changed
        if redecided:
            issuer.flush()  # the facts read now must include what the group issued so far
            facts = self.c.sql_facts.gather_in(conn, person, policy.fact_names)
            decision = p.decider.decide(facts, p.now.date(), p.app.form, trace=True)
        extra: dict[str, Any] = {}
        issued = issues(p.decider, decision)
        if issued:
            assert policy.issue is not None
            extra = ACTIONS[policy.issue](
                IssueContext(
                    issuer, p.application_id, person, p.now.date(), decision["result"], facts
                )
            )
            changed.add(person)
        outcome_of = (decision["decision"], issued, redecided)
        if not redecided and not extra and p.prebuilt is not None:
            doc, built = p.prebuilt  # built on the same decision, with nothing to add
            timings = {**p.timings, "total_ms": (time.perf_counter() - p.started) * 1e3}
            built = [
                row.replaced("timings", timings) if row.table is records.applications else row
                for row in built
            ]
            return Outcome(doc, True, *outcome_of), built
        doc, rows = decision_rows(self.c.calendar, p, decision, facts, extra)
        return Outcome(doc, True, *outcome_of), prepared(self._postgres, rows)
