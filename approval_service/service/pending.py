"""One application between deciding and recording: what the writer gets, what it gives back,
and the rows (response document, decision record, notification) it is recorded by.

Both sides build rows: the request's own thread, before the writer, whenever issuing
cannot change them (:mod:`approval_service.service.applications`), and the group
writer when an application is decided again or its result gains a card number
(:mod:`approval_service.service.group_recording`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table

from approval_service.engine.backends import Decider
from approval_service.errors import RequestError
from approval_service.service import notifications, records
from approval_service.service.documents import (
    application_document,
    project_facts,
    recorded_document,
)
from approval_service.service.issuing import ISSUES_A_CARD
from approval_service.service.prepared_rows import Prepared, prepare_row
from approval_service.service.requests import Application
from approval_service.service.workdays import WorkCalendar
from data_lookups.facts import Facts, Stamp
from data_lookups.id_numbers import mask_id


@dataclass
class Pending:
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
    prebuilt: tuple[dict[str, Any], list[Prepared]] | None = None
    # PostgreSQL refused the group it was in at once (on the event loop's writer), after
    # so many seconds: the writer thread takes it the long way, without trying at once
    # again, and counts those seconds in the group's time
    refused_at_once: float | None = None


@dataclass(frozen=True)
class Outcome:
    """What recording one application came to."""

    document: dict[str, Any]
    created: bool  # False: the answer to an earlier request with the same Idempotency-Key
    decision: str
    issued: bool
    redecided: bool  # the cached facts were older than the registry: decided again


class IdempotencyMismatch(RequestError):
    """The same Idempotency-Key was sent before with a different request."""


def first_answer(
    earlier: tuple[str | None, Mapping[str, Any]],
    digest: str | None,
    zone: ZoneInfo,
    calendar: WorkCalendar,
) -> dict[str, Any]:
    """The first response for a repeated key, if the request is the same as then
    (``earlier``: the first request's hash and its record, see :data:`group_store.Earlier`)."""
    first_digest, record = earlier
    if first_digest != digest:
        raise IdempotencyMismatch(
            "this Idempotency-Key was already used for a different request; "
            "use a new key for a new application",
            field="Idempotency-Key",
        )
    return recorded_document(record, zone, calendar)


def issues(decider: Decider, decision: Mapping[str, Any]) -> bool:
    """Whether the decision issues a result (an approval of an item that issues)."""
    return decision["decision"] == "approved" and decider.policy.issue is not None


def issues_a_card(decider: Decider, decision: Mapping[str, Any]) -> bool:
    """Whether it issues a card, whose number is known only once the writer drew it."""
    return issues(decider, decision) and decider.policy.issue in ISSUES_A_CARD


def prepared(postgres: bool, rows: list[tuple[Table, dict[str, Any]]]) -> list[Prepared]:
    """The rows ready for the group writer (see :func:`prepared_rows.prepare_row`)."""
    return [prepare_row(postgres, table, row) for table, row in rows]


def decision_rows(
    calendar: WorkCalendar,
    p: Pending,
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
        deadline = calendar.add_workdays(today, policy.referral_working_days)
        doc["deadline"] = deadline.isoformat()
        doc["supervision"] = calendar.supervision(today, deadline)
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
        # no "document": the columns hold it (documents.recorded_document, migration 0017)
    }
    return doc, [(records.outbox, message), (records.applications, record)]
