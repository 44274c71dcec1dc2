"""The application document the API returns, in JSON-ready form.

Money is a string with two decimals (``"2400.00"``), dates are ISO strings,
the moment of decision carries the city's UTC offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

from approval_service.policy.model import Policy


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
