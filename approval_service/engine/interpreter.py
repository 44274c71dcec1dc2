"""A plain tree-walking interpreter of policies.

It shares nothing with the compiled backend but the date functions, so the
differential tests compare two independent readings of the same tree. The
durable_rules backend uses it for what Rete cannot express (dates, lists).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from approval_service.engine.trace import trace_points
from approval_service.errors import EvaluationError, FactsError
from approval_service.policy import ast
from approval_service.policy.functions import FUNCTIONS
from approval_service.policy.model import Condition, Policy

CENT = Decimal("0.01")


def money(value: Any) -> Decimal:
    """A money result rounded to fen (0.01, half up)."""
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def evaluate(node: ast.Node, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Literal):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.ident]
    if isinstance(node, ast.Attribute):
        obj = evaluate(node.obj, env)
        return None if obj is None else obj[node.name]
    if isinstance(node, ast.Presence):
        value = evaluate(node.operand, env)
        return (value is not None) == node.present
    if isinstance(node, ast.Unary):
        value = evaluate(node.operand, env)
        return (not value) if node.op == "not" else -value
    if isinstance(node, ast.Binary):
        return _binary(node, env)
    if isinstance(node, ast.IfElse):
        return evaluate(node.then if evaluate(node.cond, env) else node.orelse, env)
    if isinstance(node, ast.ListLit):
        return [evaluate(item, env) for item in node.items]
    if isinstance(node, ast.Call):
        return FUNCTIONS[node.func].impl(*(evaluate(a, env) for a in node.args))
    if isinstance(node, ast.Aggregate):
        return _aggregate(node, env)
    raise EvaluationError(f"cannot evaluate {type(node).__name__}")


def _binary(node: ast.Binary, env: Mapping[str, Any]) -> Any:
    op = node.op
    left = evaluate(node.left, env)
    if op == "and":
        return bool(left) and bool(evaluate(node.right, env))
    if op == "or":
        return bool(left) or bool(evaluate(node.right, env))
    right = evaluate(node.right, env)
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "in":
        return left in right
    if op == "not in":
        return left not in right
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "/":
        return Decimal(left) / Decimal(right)
    if op == "//":
        return left // right
    raise EvaluationError(f"unknown operator {op}")


def _aggregate(node: ast.Aggregate, env: Mapping[str, Any]) -> Any:
    items = evaluate(node.source, env)
    scope = dict(env)
    selected = []
    matches = 0
    for item in items:
        scope[node.var] = item
        keep = node.where is None or bool(evaluate(node.where, scope))
        if node.func == "all":
            if not keep:
                return False
            continue
        if not keep:
            continue
        matches += 1
        if node.func == "any":
            return True
        if node.func == "none":
            return False
        if node.value is not None:
            selected.append(evaluate(node.value, scope))
    if node.func in ("all", "none"):
        return True
    if node.func == "any":
        return False
    if node.func == "count":
        return matches
    if node.func == "sum":
        assert node.value is not None and node.value.type is not None
        return sum(selected, Decimal("0") if node.value.type.kind == "money" else 0)
    if not selected:
        return None
    return max(selected) if node.func == "max" else min(selected)


def build_env(
    policy: Policy, facts: Mapping[str, Any], today: date, form: Mapping[str, Any] | None
) -> dict[str, Any]:
    env: dict[str, Any] = {"today": today, **policy.deployment, **policy.parameters_on(today)}
    for name in policy.facts:
        if name not in facts:
            raise FactsError(f"fact `{name}` is missing for {policy.item}")
        env[name] = facts[name]
    if policy.form:
        env["form"] = {name: (form or {}).get(name) for name in policy.form}
    for define in policy.defines:
        absent = [r for r in define.expr.reads if env[r] is None]
        env[define.name] = None if absent else evaluate(define.expr.node, env)
    return env


def condition_holds(condition: Condition, env: Mapping[str, Any]) -> bool | None:
    """True/False, or None when a record it reads is absent (not evaluated)."""
    if any(env[r] is None for r in condition.require.reads):
        return None
    return bool(evaluate(condition.require.node, env))


def compute_result(policy: Policy, env: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for field in policy.result:
        value = evaluate(field.expr.node, env)
        result[field.name] = money(value) if field.expr.type.kind == "money" else value
    return result


def trace_entry(condition: Condition, outcome: str, env: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"code": condition.code, "outcome": outcome}
    if outcome == "skipped":
        entry["absent"] = sorted(r for r in condition.require.reads if env[r] is None)
        entry["values"] = {}
    else:
        entry["values"] = {
            text: evaluate(node, env)
            for text, node in trace_points(condition.require.node, condition.require.source)
        }
    return entry


def assemble(policy: Policy, failed: list[Condition], env: Mapping[str, Any]) -> dict[str, Any]:
    """The decision document from the failed conditions, in declared order."""
    rejects = [c.reason for c in failed if c.on_fail == "reject"]
    if rejects:
        return {"decision": "rejected", "reasons": rejects, "result": {}}
    refers = [c.reason for c in failed if c.on_fail == "refer"]
    if refers:
        return {"decision": "referred", "reasons": refers, "result": {}}
    return {"decision": "approved", "reasons": [], "result": compute_result(policy, env)}


class InterpretedPolicy:
    """The interpreted backend for one policy."""

    backend = "interpreted"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def decide(
        self,
        facts: Mapping[str, Any],
        today: date,
        form: Mapping[str, Any] | None = None,
        trace: bool = False,
    ) -> dict[str, Any]:
        env = build_env(self.policy, facts, today, form)
        failed: list[Condition] = []
        entries: list[dict[str, Any]] = []
        for condition in self.policy.conditions:
            holds = condition_holds(condition, env)
            if holds is False:
                failed.append(condition)
            if trace:
                outcome = "skipped" if holds is None else ("passed" if holds else "failed")
                entries.append(trace_entry(condition, outcome, env))
        doc = assemble(self.policy, failed, env)
        if trace:
            doc["trace"] = entries
        return doc
