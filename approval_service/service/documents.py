"""The application document the API returns, in JSON-ready form.

Money is a string with two decimals (``"2400.00"``), dates are ISO strings,
the moment of decision carries the city's UTC offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import orjson

from approval_service.policy.model import Policy

if TYPE_CHECKING:
    from approval_service.service.workdays import WorkCalendar


def jsonable(value: Any) -> Any:
    """Engine values (Decimal, date, nested dicts and lists) as JSON values."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _orjson_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> str:
    """JSON text for database JSON columns: dates as ISO, Decimal as a string, no float."""
    return orjson.dumps(value, default=_orjson_default).decode()


#: per policy (by sha256): (fact, "list" | "record" | "value", declared fields)
_PROJECTIONS: dict[str, list[tuple[str, str, list[str]]]] = {}


def _projection(policy: Policy) -> list[tuple[str, str, list[str]]]:
    plan = _PROJECTIONS.get(policy.sha256)
    if plan is None:
        plan = []
        for name, decl in policy.facts.items():
            if decl.shape == "list":
                fields = decl.type.item.field_names() if decl.type.item else []
                plan.append((name, "list", fields))
            elif decl.type.kind == "record":
                plan.append((name, "record", decl.type.field_names()))
            else:
                plan.append((name, "value", []))
        _PROJECTIONS[policy.sha256] = plan
    return plan


def project_facts(policy: Policy, facts: Mapping[str, Any]) -> dict[str, Any]:
    """Only the facts and fields the policy declares: what the decision read, nothing more."""
    out: dict[str, Any] = {}
    for name, kind, fields in _projection(policy):
        value = facts.get(name)
        if kind == "list":
            out[name] = [{f: row.get(f) for f in fields} for row in value or []]
        elif kind == "record":
            out[name] = None if value is None else {f: value.get(f) for f in fields}
        else:
            out[name] = value
    return out


def application_document(
    *,
    application_id: str | None,
    policy: Policy,
    decision: Mapping[str, Any],
    decided_at: datetime,
    extra_result: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    result = (
        {**decision["result"], **(extra_result or {})} if decision["decision"] == "approved" else {}
    )
    doc: dict[str, Any] = {
        "application_id": application_id,
        "item": policy.item,
        "decision": decision["decision"],
        "reasons": [dict(r) for r in decision["reasons"]],
        "result": jsonable(result),
        "policy": {"id": policy.item, "version": policy.version, "sha256": policy.sha256},
        "decided_at": decided_at.isoformat(timespec="seconds"),
    }
    if application_id is None:
        del doc["application_id"]
    return doc


def recorded_document(
    record: Mapping[str, Any], zone: ZoneInfo, calendar: WorkCalendar
) -> dict[str, Any]:
    """The document a decision record answers with: as stored, for records written before
    migration 0017, or else made from the record's columns, as it was first answered
    (with the supervision light of the day of decision, as then; a reviewed case with
    its review instead). ``record`` is a row of ``applications`` (only the columns read
    here are needed) or a mapping with a ``document``.

    The moments are shown in ``zone``, the city's: PostgreSQL gives them in the
    session's zone, SQLite as the wall time they were written in (always the city's).
    What a stored copy froze is worked out again here: the light with today's holiday
    calendar, the moments in today's zone setting (README, "What is not done yet").
    It must make what :func:`application_document` and ``pending.decision_rows`` made
    (``tests/service/test_recorded_documents.py`` holds the two together): a field
    added to the one belongs in the other.
    """
    stored = record.get("document")
    if stored is not None:
        return dict(stored)
    item = record["item"]
    doc: dict[str, Any] = {
        "application_id": record["id"],
        "item": item,
        "decision": record["decision"],
        "reasons": [dict(r) for r in record["reasons"]],
        "result": dict(record["result"]),
        "policy": {
            "id": item,
            "version": record["policy_version"],
            "sha256": record["policy_sha256"],
        },
        "decided_at": shown_moment(record["decided_at"], zone),
    }
    deadline: date | None = record["deadline"]
    reviewed_at: datetime | None = record["reviewed_at"]
    if deadline is not None:
        doc["deadline"] = deadline.isoformat()
        if reviewed_at is None:
            doc["supervision"] = calendar.supervision(record["business_date"], deadline)
    if reviewed_at is not None:
        doc["review"] = {
            "officer": record["officer"],
            "decision": record["review_state"],
            "reviewed_at": shown_moment(reviewed_at, zone),
        }
    return doc


def shown_moment(moment: datetime, zone: ZoneInfo) -> str:
    """A stored moment in the city's zone, to the second, with its UTC offset."""
    local = moment.replace(tzinfo=zone) if moment.tzinfo is None else moment.astimezone(zone)
    return local.isoformat(timespec="seconds")
