"""What a trace shows for a condition: the values it read.

Trace points are the facts, parameters, derived values and list aggregates an
expression mentions, keyed by their source text, in source order. Both
backends record the same points, so their traces compare equal.
"""

from __future__ import annotations

from approval_service.policy import ast


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
