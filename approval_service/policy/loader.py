"""Loading policy files: strict structure, parsed and type-checked expressions.

A folder loads whole or not at all: every file is read and checked, every
error is collected, and :class:`PolicyFolderError` lists them all.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from approval_service.errors import (
    Location,
    PolicyDefinitionError,
    PolicyError,
    PolicyFolderError,
    PolicyTypeError,
)
from approval_service.policy import ast, declarations
from approval_service.policy.declarations import PolicyFile, fresh_name
from approval_service.policy.model import (
    OUTCOMES,
    Condition,
    Define,
    Policy,
    ResultField,
)
from approval_service.policy.typecheck import Checker, Symbol, did_you_mean
from approval_service.policy.types import DATE, TEXT
from approval_service.policy.yamlsource import Mark, YList, YMap, load_yaml

TOP_KEYS = {
    "item": True,
    "name": True,
    "department": True,
    "version": True,
    "basis": True,
    "description": False,
    "referral_working_days": False,
    "issue": False,
    "parameters": False,
    "facts": True,
    "form": False,
    "define": False,
    "conditions": True,
    "result": False,
}
CONDITION_KEYS = {"code": True, "require": True, "on_fail": True, "message": True, "basis": True}
DEFAULT_DEPLOYMENT = {"city_prefix": "3416", "province_prefix": "34"}


def load_policy_text(text: str, path: str, deployment: dict[str, str] | None = None) -> Policy:
    """Load one policy from its text; ``path`` is used in errors and as ``source_file``."""
    f = PolicyFile(path)
    doc = load_yaml(text, path)
    top = f.mapping(doc, "the policy", Mark(1, 1), TOP_KEYS)
    deployment = {**DEFAULT_DEPLOYMENT, **(deployment or {})}
    scope: dict[str, Symbol] = {"today": Symbol(DATE, "context")}
    scope.update({name: Symbol(TEXT, "context") for name in deployment})

    parameters = declarations.parameters(f, top, scope)
    facts = declarations.facts(f, top, scope)
    form = declarations.form(f, top, scope)
    checker = Checker(scope)

    defines: list[Define] = []
    table = top.get("define") or YMap()
    if "define" in top:
        f.mapping(table, "define", top.value_marks["define"], {str(k): False for k in table})
    for name, source in table.items():
        fresh_name(f, str(name), scope, table.key_marks[name])
        expr = f.expr(source, table.value_marks[name], checker, f"define `{name}`")
        defines.append(Define(str(name), expr))
        scope[str(name)] = Symbol(expr.type, "define", expr.reads)

    conditions = _conditions(f, top, checker)
    result: list[ResultField] = []
    table = top.get("result") or YMap()
    if "result" in top:
        f.mapping(table, "result", top.value_marks["result"], {str(k): False for k in table})
    guaranteed = {
        c.require.node.operand.ident
        for c in conditions
        if isinstance(c.require.node, ast.Presence)
        and c.require.node.present
        and isinstance(c.require.node.operand, ast.Name)
    }
    for name, source in table.items():
        expr = f.expr(source, table.value_marks[name], checker, f"result `{name}`")
        if expr.type.kind in ("record", "list"):
            raise PolicyTypeError(
                f"result `{name}` must be a single value, not {expr.type}",
                f.at(table.value_marks[name]),
            )
        for needed in sorted(expr.reads - guaranteed):
            raise PolicyTypeError(
                f"result `{name}` reads `{needed}`, which may be absent on approval",
                f.at(table.value_marks[name]),
                f"add a condition `require: {needed} is present`",
            )
        result.append(ResultField(str(name), expr))

    days = top.get("referral_working_days", 3)
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 60:
        raise PolicyDefinitionError(
            "referral_working_days must be a whole number from 1 to 60",
            f.at(top.value_marks.get("referral_working_days")),
        )
    return Policy(
        item=f.text(top, "item", "the policy"),
        name=f.text(top, "name", "the policy"),
        department=f.text(top, "department", "the policy"),
        version=f.text(top, "version", "the policy"),
        basis=f.text(top, "basis", "the policy"),
        description=str(top.get("description") or ""),
        source_file=path,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        referral_working_days=days,
        issue=(str(top["issue"]) if top.get("issue") else None),
        parameters=parameters,
        facts=facts,
        form=form,
        defines=defines,
        conditions=conditions,
        result=result,
        deployment=deployment,
        source_text=text,
    )


def _conditions(f: PolicyFile, top: YMap, checker: Checker) -> list[Condition]:
    items = top["conditions"]
    if not isinstance(items, YList) or not items:
        raise PolicyDefinitionError(
            "conditions must be a non-empty list", f.at(top.value_marks["conditions"])
        )
    out: list[Condition] = []
    seen: set[str] = set()
    for spec, mark in zip(items, items.marks, strict=True):
        spec = f.mapping(spec, "a condition", mark, CONDITION_KEYS)
        code = f.text(spec, "code", "a condition")
        if code in seen:
            raise PolicyDefinitionError(
                f"reason code `{code}` appears twice", f.at(spec.value_marks["code"])
            )
        seen.add(code)
        if spec["on_fail"] not in OUTCOMES:
            raise PolicyDefinitionError(
                f"on_fail of `{code}` is `{spec['on_fail']}`",
                f.at(spec.value_marks["on_fail"]),
                did_you_mean(str(spec["on_fail"]), list(OUTCOMES)) or "use reject or refer",
            )
        expr = f.expr(spec["require"], spec.value_marks["require"], checker, f"condition `{code}`")
        if expr.type.kind != "bool" or expr.type.nullable:
            raise PolicyTypeError(
                f"condition `{code}` must be true or false, not {expr.type}",
                f.at(spec.value_marks["require"]),
            )
        out.append(
            Condition(
                code,
                expr,
                str(spec["on_fail"]),
                f.text(spec, "message", code),
                f.text(spec, "basis", code),
            )
        )
    return out


def load_policy_file(path: Path, deployment: dict[str, str] | None = None) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyDefinitionError(f"cannot read: {exc}", Location(str(path))) from exc
    return load_policy_text(text, str(path), deployment)


def load_policy_folder(folder: Path, deployment: dict[str, str] | None = None) -> dict[str, Policy]:
    """Every ``*.yaml`` directly in ``folder``, all or nothing."""
    if not folder.is_dir():
        raise PolicyFolderError(
            [PolicyDefinitionError("no such folder of policy files", Location(str(folder)))]
        )
    policies: dict[str, Policy] = {}
    errors: list[PolicyError] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            policy = load_policy_file(path, deployment)
        except PolicyError as exc:
            errors.append(exc)
            continue
        if policy.item in policies:
            errors.append(
                PolicyDefinitionError(
                    f"item `{policy.item}` is also defined in {policies[policy.item].source_file}",
                    Location(str(path)),
                )
            )
            continue
        policies[policy.item] = policy
    if errors:
        raise PolicyFolderError(errors)
    if not policies:
        raise PolicyFolderError(
            [PolicyDefinitionError("no *.yaml policy files", Location(str(folder)))]
        )
    return policies
