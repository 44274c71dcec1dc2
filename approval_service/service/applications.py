"""Second approval (秒批): decide, issue exactly once, record — or change nothing (precheck).

An application is decided on the facts in the cache, as stored, with the stamp
they were read at (no database read first). It then goes to the group-commit
writer (:mod:`approval_service.service.group_commit`), which does many
applications in one write transaction (:meth:`ApplicationService.record_group`):
it takes every person's lock (PostgreSQL: transaction-scoped advisory locks in
ID order; SQLite: the write transaction itself), reads their current stamps,
and decides again on facts read in the transaction wherever the cached stamp is
behind or an earlier application of the same group issued to the same person.
An approval that issues does so there, under the lock, and the decision record
and its notification are inserted in the same transaction; the caller is
answered only after the commit. A second application racing the first waits for
the lock, sees what the first issued, and is rejected with the right reason.
Registry constraints (one active allowance, one valid card) back this up.
Nothing is half-issued: issuance and record commit together or not at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, Table, exc

from approval_service.engine.backends import Decider
from approval_service.errors import RequestError
from approval_service.service import group_store, notifications, records
from approval_service.service.documents import application_document, project_facts
from approval_service.service.identifiers import time_ordered_id
from approval_service.service.issuing import ACTIONS, ISSUES_A_CARD, IssueContext
from approval_service.service.requests import Application, validate_application
from data_lookups.database import is_postgres, read_connection
from data_lookups.facts import Facts, Stamp
from data_lookups.id_numbers import mask_id
from data_lookups.issuance import Issuer

if TYPE_CHECKING:  # the container builds the group committer around this service
    from approval_service.service.container import Container

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    """One application between deciding (on cached facts) and recording."""

    channel: str
    idempotency_key: str | None
    digest: str | None  # of the request, kept only when it has an Idempotency-Key
    application_id: str
    app: Application
    decider: Decider
    now: datetime
    started: float
    timings: dict[str, float]
    stamp: Stamp  # the registry state the facts were read at
    facts: Facts
    decision: dict[str, Any]
    # the response and its rows, built before the group writer unless the decision
    # issues a card: the writer uses them as they are unless it must decide again
    prebuilt: tuple[dict[str, Any], list[group_store.Prepared]] | None = None


@dataclass(frozen=True)
class _Outcome:
    """What recording one application came to."""

    document: dict[str, Any]
    created: bool  # False: the answer to an earlier request with the same Idempotency-Key
    decision: str
    issued: bool
    redecided: bool  # the cached facts were older than the registry: decided again


class IdempotencyMismatch(RequestError):
    """The same Idempotency-Key was sent before with a different request."""


def _first_answer(earlier: tuple[str | None, dict[str, Any]], digest: str | None) -> dict[str, Any]:
    """The first response for a repeated key, if the request is the same as then."""
    first_digest, document = earlier
    if first_digest != digest:
        raise IdempotencyMismatch(
            "this Idempotency-Key was already used for a different request; "
            "use a new key for a new application",
            field="Idempotency-Key",
        )
    return document


def new_application_id() -> str:
    """Time-ordered and unguessable: 12 hex digits of milliseconds, 20 random."""
    return time_ordered_id()


def request_hash(app: Application) -> str:
    body = {"item": app.item, "applicant_id": app.applicant_id, "form": app.form}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ApplicationService:
    def __init__(self, container: Container) -> None:
        self.c = container
        self._postgres = is_postgres(container.engine)

    # reading -------------------------------------------------------------
    def _prepare(
        self, item: str, applicant_id: str, form: Mapping[str, Any] | None
    ) -> tuple[Decider, Application]:
        decider = self.c.policies.decider(item)
        return decider, validate_application(decider.policy, applicant_id, form)

    def precheck(
        self, item: str, applicant_id: str, form: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """网上预审: the decision the application would get now; issues and records nothing."""
        decider, app = self._prepare(item, applicant_id, form)
        now = self.c.clock.now()
        facts = self.c.facts.gather(app.applicant_id, decider.policy.fact_names)
        decision = decider.decide(facts, now.date(), app.form)
        metrics = self.c.metrics
        metrics.labelled(metrics.decisions, item, decision["decision"], "precheck").inc()
        doc = application_document(
            application_id=None, policy=decider.policy, decision=decision, decided_at=now
        )
        if decision["decision"] == "referred":
            deadline = self.c.calendar.add_workdays(
                now.date(), decider.policy.referral_working_days
            )
            doc["deadline"] = deadline.isoformat()
        return doc

    def get(self, application_id: str, channel: str | None = None) -> dict[str, Any] | None:
        """The application's document; with ``channel``, only if that channel made it."""
        with read_connection(self.c.engine) as conn:
            row = records.get_application(conn, application_id)
        if row is None or (channel is not None and row["channel"] != channel):
            return None
        return self.present(row)

    def present(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The stored document, with the supervision light as of now for open referrals."""
        doc = dict(row["document"])
        if row["deadline"] is not None:
            deadline = row["deadline"]
            doc["deadline"] = deadline.isoformat()
            if row["review_state"] == "open":
                doc["supervision"] = self.c.calendar.supervision(self.c.clock.today(), deadline)
        return doc

    # applying ------------------------------------------------------------
    def apply(
        self,
        channel: str,
        item: str,
        applicant_id: str,
        form: Mapping[str, Any] | None,
        idempotency_key: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Decide, issue and record one application. Returns (document, newly created)."""
        decider, app = self._prepare(item, applicant_id, form)
        started = time.perf_counter()
        stamp, facts = self.c.facts.gather_unchecked(app.applicant_id, decider.policy.fact_names)
        pending = self._decide(channel, decider, app, idempotency_key, started, stamp, facts)
        try:
            outcome = self.c.committer.write(pending)
        except exc.IntegrityError:
            earlier = self._raced_replay(pending)
            if earlier is None:
                raise
            return earlier, False
        return self._finish(pending, outcome)

    async def apply_async(
        self,
        channel: str,
        item: str,
        applicant_id: str,
        form: Mapping[str, Any] | None,
        idempotency_key: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """:meth:`apply` on the event loop: the cache read and the commit wait don't block it."""
        decider, app = self._prepare(item, applicant_id, form)
        started = time.perf_counter()
        stamp, facts = await self.c.facts.agather_unchecked(
            app.applicant_id, decider.policy.fact_names
        )
        pending = self._decide(channel, decider, app, idempotency_key, started, stamp, facts)
        try:
            outcome = await self.c.committer.run(pending)
        except exc.IntegrityError:
            earlier = await asyncio.to_thread(self._raced_replay, pending)
            if earlier is None:
                raise
            return earlier, False
        return self._finish(pending, outcome)

    def _decide(
        self,
        channel: str,
        decider: Decider,
        app: Application,
        idempotency_key: str | None,
        started: float,
        stamp: Stamp,
        facts: Facts,
    ) -> _Pending:
        # A repeated Idempotency-Key is answered from the first record without a read up
        # front: the group writer looks up every key of its group in one statement, under
        # the people's locks, and a twin that slips past (its first still uncommitted) is
        # stopped by the key's unique constraint. Nothing is issued twice either way.
        gathered = time.perf_counter()
        now = self.c.clock.now()
        decision = decider.decide(facts, now.date(), app.form, trace=True)
        timings = {
            "gather_ms": (gathered - started) * 1e3,
            "decide_ms": (time.perf_counter() - gathered) * 1e3,
        }
        pending = _Pending(
            channel=channel,
            idempotency_key=idempotency_key,
            digest=request_hash(app) if idempotency_key is not None else None,
            application_id=new_application_id(),
            app=app,
            decider=decider,
            now=now,
            started=started,
            timings=timings,
            stamp=stamp,
            facts=facts,
            decision=decision,
        )
        # the writer is the bottleneck: build here what issuing cannot change (only a
        # card's number, known once it is drawn in the writer, goes into the result)
        if not self._issues_a_card(decider, decision):
            doc, rows = self._rows(pending, decision, facts, {})
            pending.prebuilt = (doc, self._prepared(rows))
        return pending

    @staticmethod
    def _issues(decider: Decider, decision: Mapping[str, Any]) -> bool:
        return decision["decision"] == "approved" and decider.policy.issue is not None

    @classmethod
    def _issues_a_card(cls, decider: Decider, decision: Mapping[str, Any]) -> bool:
        return cls._issues(decider, decision) and decider.policy.issue in ISSUES_A_CARD

    def _prepared(self, rows: list[tuple[Table, dict[str, Any]]]) -> list[group_store.Prepared]:
        return [group_store.prepare_row(self._postgres, table, row) for table, row in rows]

    def _raced_replay(self, p: _Pending) -> dict[str, Any] | None:
        """The first response, when this request's key lost a race with its twin."""
        if p.idempotency_key is None:
            return None
        key = (p.channel, p.idempotency_key)
        with read_connection(self.c.engine) as conn:
            found = group_store.earlier_answers(conn, [key])
        earlier = _first_answer(found[key], p.digest) if key in found else None
        if earlier is not None:
            log.info("an idempotent retry raced the first request; returning the first response")
        return earlier

    def _finish(self, p: _Pending, outcome: _Outcome) -> tuple[dict[str, Any], bool]:
        if not outcome.created:
            return outcome.document, False
        item = p.decider.policy.item
        metrics = self.c.metrics
        if outcome.issued:
            metrics.labelled(metrics.issued, item).inc()
        metrics.labelled(metrics.decisions, item, outcome.decision, "apply").inc()
        metrics.labelled(metrics.latency, item).observe(time.perf_counter() - p.started)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "application %s %s for %s: %s",
                p.application_id,
                item,
                mask_id(p.app.applicant_id),
                outcome.decision,
            )
        return outcome.document, True

    # recording (in the group-commit writer) ---------------------------------
    def record_group(self, conn: Connection, group: Sequence[_Pending]) -> list[_Outcome]:
        """Check, issue and record a group of applications in the caller's transaction.

        The people are locked (PostgreSQL), then their stamps checked. An application
        whose facts came from the cache at the current stamp keeps its decision;
        otherwise (the cache was behind, or an earlier application of this group issued
        to the same person) it is decided again on facts read here. Approvals that issue
        do so now, under the lock, and every decision record and notification is
        inserted at once, and on PostgreSQL committed in the same round trip (see
        :mod:`group_store`). Records built before the writer (see :meth:`_decide`) are
        used as they are unless the application was decided again or issuing added to
        its result (a card number).
        """
        metrics = self.c.metrics
        with group_store.transaction_in_pipeline(conn):
            if self._at_once_possible(group):
                outcomes = self._record_at_once(conn, group)
                if outcomes is not None:
                    metrics.labelled(metrics.groups, "at_once").inc()
                    return outcomes
                metrics.labelled(metrics.groups, "refused_at_once").inc()
            else:
                metrics.labelled(metrics.groups, "checked").inc()
            return self._record_checked(conn, group)

    def _at_once_possible(self, group: Sequence[_Pending]) -> bool:
        """A small PostgreSQL group that needs nothing read first: no card number to draw
        (each entry's record is built already), nobody twice, no key twice, one epoch."""
        if not self._postgres or len(group) > group_store.AT_ONCE_MAX:
            return False
        if any(p.prebuilt is None for p in group):
            return False
        keyed = [(p.channel, p.idempotency_key) for p in group if p.idempotency_key is not None]
        return (
            len({p.app.applicant_id for p in group}) == len(group)
            and len(set(keyed)) == len(keyed)
            and len({p.stamp.epoch for p in group}) == 1
        )

    def _record_at_once(self, conn: Connection, group: Sequence[_Pending]) -> list[_Outcome] | None:
        """The group in one round trip, on the decisions made from the cache, if every
        stamp is still current; None (nothing written) if PostgreSQL refused any of it."""
        stamps = {p.app.applicant_id: p.stamp for p in group}
        issuer = group_store.issuer(conn, cards_expected=0)
        outcomes: list[_Outcome] = []
        rows: list[group_store.Prepared] = []
        for p in group:
            outcome, prepared = self._record_one(conn, issuer, p, stamps, set())
            outcomes.append(outcome)
            rows.extend(prepared)
        if not group_store.write_at_once(conn, stamps, issuer, rows):
            return None
        return outcomes

    def _record_checked(self, conn: Connection, group: Sequence[_Pending]) -> list[_Outcome]:
        """The group the long way: stamps and earlier answers read under the locks first."""
        people = [p.app.applicant_id for p in group]
        keyed = [(p.channel, p.idempotency_key) for p in group if p.idempotency_key is not None]
        cards = sum(self._issues_a_card(p.decider, p.decision) for p in group)
        issuer = group_store.issuer(conn, cards_expected=cards)
        stamps, earlier = group_store.open_group(conn, self.c.sql_facts, people, keyed, issuer)
        changed: set[str] = set()  # people this group has issued to
        outcomes: list[_Outcome] = []
        rows: list[group_store.Prepared] = []
        for p in group:
            key = None if p.idempotency_key is None else (p.channel, p.idempotency_key)
            if key is not None and key in earlier:  # a repeat: the first answer, nothing new
                document = _first_answer(earlier[key], p.digest)
                outcomes.append(_Outcome(document, False, "", False, False))
                continue
            outcome, prepared = self._record_one(conn, issuer, p, stamps, changed)
            outcomes.append(outcome)
            if key is not None:  # its twin later in this group gets the same answer
                earlier[key] = (p.digest, outcome.document)
            rows.extend(prepared)
        group_store.finish_group(conn, issuer, rows)  # on PostgreSQL this commits
        return outcomes

    def after_commit(self, group: Sequence[_Pending], outcomes: Sequence[_Outcome]) -> None:
        """Drop cache entries the group made old (an early free; stamps keep reads right)."""
        old = [
            p.app.applicant_id
            for p, o in zip(group, outcomes, strict=True)
            if o.issued or o.redecided
        ]
        if old:
            self.c.facts.invalidate(old)

    def _record_one(
        self,
        conn: Connection,
        issuer: Issuer,
        p: _Pending,
        stamps: Mapping[str, Stamp],
        changed: set[str],
    ) -> tuple[_Outcome, list[group_store.Prepared]]:
        policy = p.decider.policy
        person = p.app.applicant_id
        facts, decision = p.facts, p.decision
        redecided = stamps[person] != p.stamp or person in changed
        if redecided:
            issuer.flush()  # the facts read now must include what the group issued so far
            facts = self.c.sql_facts.gather_in(conn, person, policy.fact_names)
            decision = p.decider.decide(facts, p.now.date(), p.app.form, trace=True)
        extra: dict[str, Any] = {}
        issued = self._issues(p.decider, decision)
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
            doc, prepared = p.prebuilt  # built on the same decision, with nothing to add
            timings = {**p.timings, "total_ms": (time.perf_counter() - p.started) * 1e3}
            prepared = [
                row.replaced("timings", timings) if row.table is records.applications else row
                for row in prepared
            ]
            return _Outcome(doc, True, *outcome_of), prepared
        doc, rows = self._rows(p, decision, facts, extra)
        return _Outcome(doc, True, *outcome_of), self._prepared(rows)

    def lock_person(self, conn: Connection, applicant_id: str) -> None:
        """The same per-person lock the group writer takes (see :mod:`group_store`)."""
        group_store.lock_people(conn, [applicant_id])

    def _rows(
        self,
        p: _Pending,
        decision: Mapping[str, Any],
        facts: Mapping[str, Any],
        extra: Mapping[str, Any],
    ) -> tuple[dict[str, Any], list[tuple[Table, dict[str, Any]]]]:
        """The response document, and the decision record and outbox rows to write."""
        policy = p.decider.policy
        today = p.now.date()
        doc = application_document(
            application_id=p.application_id,
            policy=policy,
            decision=decision,
            decided_at=p.now,
            extra_result=extra,
        )
        deadline = None
        if decision["decision"] == "referred":
            deadline = self.c.calendar.add_workdays(today, policy.referral_working_days)
            doc["deadline"] = deadline.isoformat()
            doc["supervision"] = self.c.calendar.supervision(today, deadline)
        timings = {**p.timings, "total_ms": (time.perf_counter() - p.started) * 1e3}
        message = notifications.outbox_row(
            application_id=p.application_id,
            event="decided",
            recipient_id=p.app.applicant_id,
            text=notifications.message_text(policy.name, doc),
            now=p.now,
        )
        record = {
            "id": p.application_id,
            "channel": p.channel,
            "idempotency_key": p.idempotency_key,
            "request_hash": p.digest,
            "item": policy.item,
            "applicant_id": p.app.applicant_id,
            "applicant_masked": mask_id(p.app.applicant_id),
            "policy_version": policy.version,
            "policy_sha256": policy.sha256,
            "business_date": today,
            "decision": decision["decision"],
            "reasons": doc["reasons"],
            "result": doc["result"],
            "facts": project_facts(policy, facts),
            "trace": decision.get("trace", []),
            "form": p.app.form,
            "timings": timings,
            "decided_at": p.now,
            "deadline": deadline,
            "review_state": "open" if deadline is not None else None,
            "document": doc,
        }
        return doc, [(records.outbox, message), (records.applications, record)]
