"""Second approval (秒批): decide, issue exactly once, record — or change nothing (precheck).

An application is decided on the facts in the cache, as stored, with the stamp
they were read at (no database read first), and everything issuing cannot change
(the response, the decision record, its notification) is built right away. It
then goes to the group-commit writer (:mod:`approval_service.service.group_commit`),
which records many applications in one write transaction
(:mod:`approval_service.service.group_recording`: locks, stamps checked, decided
again where the cache was behind, issued, inserted, committed); the caller is
answered only after the commit. Nothing is half-issued: issuance and record
commit together or not at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Connection, exc

from approval_service.engine.backends import Decider
from approval_service.service import group_store, records
from approval_service.service.documents import application_document, recorded_document
from approval_service.service.identifiers import time_ordered_id
from approval_service.service.pending import (
    Outcome,
    Pending,
    decision_rows,
    first_answer,
    issues_a_card,
    prepared,
)
from approval_service.service.requests import Application, validate_application
from data_lookups.database import is_postgres, read_connection
from data_lookups.facts import Facts, Stamp
from data_lookups.id_numbers import mask_id

if TYPE_CHECKING:
    from approval_service.service.container import Container

log = logging.getLogger(__name__)


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
        metrics.count(metrics.labelled(metrics.decisions, item, decision["decision"], "precheck"))
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
        """The recorded document, with the supervision light as of now for open referrals."""
        doc = recorded_document(row, self.c.clock.zone, self.c.calendar)
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
    ) -> Pending:
        # A repeated Idempotency-Key is answered from the first record without a read up
        # front: the key's unique constraint refuses a small group written at once, and
        # the long way looks up every key of its group in one statement, under the
        # people's locks; a twin that slips past (its first still uncommitted) is stopped
        # by the same constraint. Nothing is issued twice either way.
        gathered = time.perf_counter()
        now = self.c.clock.now()
        decision = decider.decide(facts, now.date(), app.form, trace=True)
        self.c.metrics.observe(self.c.metrics.fact_read, gathered - started)
        timings = {
            "gather_ms": (gathered - started) * 1e3,
            "decide_ms": (time.perf_counter() - gathered) * 1e3,
        }
        pending = Pending(
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
        if not issues_a_card(decider, decision):
            doc, rows = decision_rows(self.c.calendar, pending, decision, facts, {})
            pending.prebuilt = (doc, prepared(self._postgres, rows))
        return pending

    def _raced_replay(self, p: Pending) -> dict[str, Any] | None:
        """The first response, when this request's key lost a race with its twin."""
        if p.idempotency_key is None:
            return None
        key = (p.channel, p.idempotency_key)
        with read_connection(self.c.engine) as conn:
            found = group_store.earlier_answers(conn, [key])
        earlier = (
            first_answer(found[key], p.digest, self.c.clock.zone, self.c.calendar)
            if key in found
            else None
        )
        if earlier is not None:
            log.info("an idempotent retry raced the first request; returning the first response")
        return earlier

    def _finish(self, p: Pending, outcome: Outcome) -> tuple[dict[str, Any], bool]:
        if not outcome.created:
            return outcome.document, False
        item = p.decider.policy.item
        metrics = self.c.metrics
        if outcome.issued:
            metrics.count(metrics.labelled(metrics.issued, item))
        metrics.count(metrics.labelled(metrics.decisions, item, outcome.decision, "apply"))
        metrics.observe(metrics.labelled(metrics.latency, item), time.perf_counter() - p.started)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "application %s %s for %s: %s",
                p.application_id,
                item,
                mask_id(p.app.applicant_id),
                outcome.decision,
            )
        return outcome.document, True

    # locking -------------------------------------------------------------
    def lock_person(self, conn: Connection, applicant_id: str) -> None:
        """The same per-person lock the group writer takes (see :mod:`group_store`)."""
        group_store.lock_people(conn, [applicant_id])
