"""What a trace shows for a condition: the values it read.

Trace points are the facts, parameters, derived values and list aggregates an
expression mentions, keyed by their source text, in source order. Both
backends record the same points, so their traces compare equal.

A backend's trace entry is ``{"code", "outcome", "values"}`` (and ``"absent"`` for a
skipped condition): what this decision found. The condition's text and what its
failure does belong to the policy, whose text every decision record keeps by sha256,
so a record does not repeat them for every application; :func:`with_conditions` adds
them back for a reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from approval_service.policy import ast
from approval_service.policy.model import Policy


def trace_points(
    node: ast.Node, source: str, local_vars: frozenset[str] = frozenset()
) -> list[tuple[str, ast.Node]]:
    """``[(source text, node)]`` for every point ``node`` reads, without repeats."""
    seen: dict[str, ast.Node] = {}

    def walk(n: ast.Node, bound: frozenset[str]) -> None:
        if (
            isinstance(n, ast.Presence)
            and isinstance(n.operand, ast.Name)
            and n.operand.type is not None
            and n.operand.type.kind == "record"
        ):
            # a whole record: show whether it is there, never its contents (personal data)
            seen.setdefault(source[n.start : n.end], n)
            return
        if isinstance(n, ast.Aggregate):
            seen.setdefault(source[n.start : n.end], n)
            return
        path = ast.path_of(n)
        if path is not None:
            if path.split(".", 1)[0] not in bound:
                seen.setdefault(source[n.start : n.end], n)
            return
        if isinstance(n, ast.Literal):
            return
        for child in ast.children(n):
            walk(child, bound)

    walk(node, local_vars)
    return list(seen.items())


def with_conditions(policy: Policy, trace: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The trace as a reader wants it: each entry with its condition's ``require`` text
    and ``on_fail`` from ``policy`` (the policy that made the decision)."""
    conditions = {c.code: c for c in policy.conditions}
    out = []
    for entry in trace:
        condition = conditions[entry["code"]]
        out.append(
            {
                "code": entry["code"],
                "require": condition.require.source,
                "on_fail": condition.on_fail,
                **{k: v for k, v in entry.items() if k != "code"},
            }
        )
    return out
