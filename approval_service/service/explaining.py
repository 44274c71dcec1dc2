"""Explaining decisions: what an application would get now, and replaying a stored one.

``explain`` decides against the registry as it is now, as of any date, with the
trace, issuing nothing. ``replay`` takes a stored decision record, loads the
policy text it was made with (kept by sha256), decides again on the facts it
read, and says whether that reproduces the record, and whether today's policy
on today's registry would decide the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from approval_service.engine.backends import BACKENDS
from approval_service.engine.trace import with_conditions
from approval_service.errors import MiaopiError, RequestError
from approval_service.policy.loader import load_policy_text
from approval_service.policy.model import Policy
from approval_service.policy.types import Type
from approval_service.service import records
from approval_service.service.container import Container
from approval_service.service.documents import jsonable
from approval_service.service.requests import validate_application
from data_lookups.database import read_connection


class UnknownApplication(RequestError):
    """No decision record with that application id."""


def explain(
    container: Container,
    item: str,
    applicant_id: str,
    as_of: date | None = None,
    form: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    decider = container.policies.decider(item)
    app = validate_application(
        decider.policy, applicant_id, form or _placeholder_form(decider.policy)
    )
    day = as_of or container.clock.today()
    facts = container.sql_facts.gather(app.applicant_id, decider.policy.fact_names)
    doc = decider.decide(facts, day, app.form, trace=True)
    policy = decider.policy
    explained: dict[str, Any] = jsonable(
        {
            "item": item,
            "as_of": day,
            "decision": doc["decision"],
            "reasons": doc["reasons"],
            "result": doc["result"],
            "trace": with_conditions(policy, doc["trace"]),
            "policy": {"id": policy.item, "version": policy.version, "sha256": policy.sha256},
        }
    )
    return explained


def _placeholder_form(policy: Policy) -> dict[str, str]:
    """Explaining needs no mailing address; a stand-in keeps required form fields valid."""
    return {name: "（说明用）" for name, spec in policy.form.items() if spec.required}


def _decode(value: Any, typ: Type) -> Any:
    if value is None:
        return None
    if typ.kind == "date":
        return date.fromisoformat(value)
    if typ.kind == "money":
        return Decimal(value)
    if typ.kind == "record":
        return {name: _decode(value.get(name), t) for name, t in typ.fields}
    if typ.kind == "list" and typ.item is not None:
        return [_decode(v, typ.item) for v in value]
    return value


def decode_facts(policy: Policy, stored: Mapping[str, Any]) -> dict[str, Any]:
    """Stored (JSON) facts back into engine values, by the policy's declared types."""
    return {name: _decode(stored.get(name), decl.type) for name, decl in policy.facts.items()}


def replay(container: Container, application_id: str) -> dict[str, Any]:
    with read_connection(container.engine) as conn:
        row = records.get_application(conn, application_id)
        if row is None:
            raise UnknownApplication(f"no application {application_id!r}", field="application_id")
        source = records.policy_source(conn, row["policy_sha256"])
    if source is None:
        raise MiaopiError(
            f"the text of policy {row['policy_sha256'][:12]}… was not kept; cannot replay"
        )
    then_policy = load_policy_text(
        source,
        f"<{row['item']} {row['policy_version']}>",
        container.policies.policies[row["item"]].deployment
        if row["item"] in container.policies.policies
        else None,
    )
    then = BACKENDS["compiled"](then_policy).decide(
        decode_facts(then_policy, row["facts"]), row["business_date"], row["form"], trace=True
    )
    stored = {
        "decision": row["decision"],
        "reasons": row["reasons"],
        "result": {
            k: v for k, v in row["result"].items() if k in {f.name for f in then_policy.result}
        },
    }
    replayed = jsonable(
        {"decision": then["decision"], "reasons": then["reasons"], "result": then["result"]}
    )
    out: dict[str, Any] = {
        "application_id": application_id,
        "item": row["item"],
        "as_of": row["business_date"].isoformat(),
        "policy": {"version": row["policy_version"], "sha256": row["policy_sha256"]},
        "stored": stored,
        "replayed": replayed,
        "reproduced": replayed == stored,
        "trace": jsonable(with_conditions(then_policy, then["trace"])),
    }
    current = container.policies.deciders.get(row["item"])
    if current is not None:
        facts_now = container.sql_facts.gather(row["applicant_id"], current.policy.fact_names)
        form = {k: v for k, v in row["form"].items() if k in current.policy.form}
        now = current.decide(facts_now, container.clock.today(), form)
        today = jsonable(
            {"decision": now["decision"], "reasons": now["reasons"], "result": now["result"]}
        )
        out["today"] = {
            "as_of": container.clock.today().isoformat(),
            "policy": {"version": current.policy.version, "sha256": current.policy.sha256},
            **today,
            "same_decision": today["decision"] == stored["decision"]
            and today["reasons"] == stored["reasons"],
        }
    return out
