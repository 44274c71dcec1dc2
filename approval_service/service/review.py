"""Referred cases: the review queue (电子监察) and the officer's decision.

An officer's approval issues the result exactly as an automatic approval would:
under the person's lock, on facts read again in the same transaction, with the
item's issuance action, the record updated and the applicant's message queued,
all in one commit. The application row is locked first, so a case can be
reviewed once only; a second review answers 409.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Connection

from approval_service.engine.interpreter import build_env, compute_result
from approval_service.errors import MiaopiError, RequestError
from approval_service.service import notifications, records
from approval_service.service.applications import ApplicationService
from approval_service.service.documents import jsonable, recorded_document, shown_moment
from approval_service.service.explaining import UnknownApplication
from approval_service.service.issuing import ACTIONS, IssueContext
from data_lookups.database import read_connection, write_transaction
from data_lookups.issuance import DirectIssuer

OFFICER_BASIS = "窗口工作人员审核"


class ReviewConflict(MiaopiError):
    """The case cannot be reviewed that way (already reviewed, or approval impossible)."""


def review_queue(service: ApplicationService) -> list[dict[str, Any]]:
    c = service.c
    today = c.clock.today()
    with read_connection(c.engine) as conn:
        rows = records.open_referrals(conn)
    cases = []
    for row in rows:
        deadline = row["deadline"]
        cases.append(
            {
                "application_id": row["id"],
                "item": row["item"],
                "applicant": row["applicant_masked"],
                "channel": row["channel"],
                "decided_at": shown_moment(row["decided_at"], c.clock.zone),
                "deadline": deadline.isoformat(),
                "supervision": c.calendar.supervision(today, deadline),
                "workdays_left": c.calendar.workdays_left(today, deadline),
                "reasons": row["reasons"],
            }
        )
    return cases


def _clean_reasons(reasons: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    if not reasons:
        raise RequestError(
            "a rejection needs at least one reason with code and message", field="reasons"
        )
    out = []
    for index, reason in enumerate(reasons):
        code, message = (
            str(reason.get("code") or "").strip(),
            str(reason.get("message") or "").strip(),
        )
        if not code or not message:
            raise RequestError(
                f"reasons[{index}] needs a code and a message", field=f"reasons.{index}"
            )
        out.append(
            {"code": code, "message": message, "basis": str(reason.get("basis") or OFFICER_BASIS)}
        )
    return out


def review(
    service: ApplicationService,
    application_id: str,
    decision: str,
    officer: str,
    reasons: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    if decision not in ("approved", "rejected"):
        raise RequestError("decision must be approved or rejected", field="decision")
    if not officer.strip():
        raise RequestError("officer is required", field="officer")
    c = service.c
    now = c.clock.now()
    with write_transaction(c.engine) as conn:
        row = records.get_application(conn, application_id, for_update=True)
        if row is None:
            raise UnknownApplication(f"no application {application_id!r}", field="application_id")
        if row["review_state"] != "open":
            state = row["review_state"] or "decided automatically"
            raise ReviewConflict(f"application {application_id} is not open for review ({state})")
        if decision == "approved":
            outcome = _approve(service, conn, row, now.date())
        else:
            outcome = {"decision": "rejected", "reasons": _clean_reasons(reasons), "result": {}}
        document = {
            **recorded_document(row, c.clock.zone, c.calendar),
            **outcome,
            "review": {
                "officer": officer.strip(),
                "decision": decision,
                "reviewed_at": now.isoformat(timespec="seconds"),
            },
        }
        document.pop("supervision", None)
        records.update_application(
            conn,
            application_id,
            {
                "decision": decision,
                "reasons": outcome["reasons"],
                "result": outcome["result"],
                "review_state": decision,
                "officer": officer.strip(),
                "reviewed_at": now,
                # a record of before migration 0017 keeps its document up to date; a
                # later one has none, its columns (just updated) being the document
                **({"document": document} if row["document"] is not None else {}),
            },
        )
        policy = c.policies.policies.get(row["item"])
        notifications.enqueue(
            conn,
            application_id=application_id,
            event="reviewed",
            recipient_id=row["applicant_id"],
            text=notifications.message_text(
                policy.name if policy else row["item"], document, reviewed=True
            ),
            now=now,
        )
    if decision == "approved":
        c.facts.invalidate([row["applicant_id"]])
    return service.present({**row, "document": document, "review_state": decision})


def _approve(
    service: ApplicationService, conn: Connection, row: Mapping[str, Any], today: date
) -> dict[str, Any]:
    c = service.c
    decider = c.policies.decider(row["item"])
    policy = decider.policy
    service.lock_person(conn, row["applicant_id"])
    facts = c.sql_facts.gather_in(conn, row["applicant_id"], policy.fact_names)
    form = {k: v for k, v in row["form"].items() if k in policy.form}
    now_decision = decider.decide(facts, today, form)
    if now_decision["decision"] == "rejected":
        codes = ", ".join(r["code"] for r in now_decision["reasons"])
        raise ReviewConflict(
            f"cannot approve: the registry now rejects this application ({codes}); "
            "reject it instead"
        )
    env = build_env(policy, facts, today, form)
    missing = sorted({r for f in policy.result for r in f.expr.reads if env[r] is None})
    if missing:
        raise ReviewConflict(
            f"cannot approve: the result needs {', '.join(missing)} data the registry "
            "does not hold; have the registry corrected first"
        )
    result = compute_result(policy, env)
    extra: dict[str, Any] = {}
    if policy.issue:
        extra = ACTIONS[policy.issue](
            IssueContext(DirectIssuer(conn), row["id"], row["applicant_id"], today, result, facts)
        )
    return {"decision": "approved", "reasons": [], "result": jsonable({**result, **extra})}
