"""The expression tree. Nodes carry their source span for errors and traces.

The type checker fills ``type`` (and ``reads``: the optional records an
expression depends on) in place; after that the tree is not changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from approval_service.policy.types import Type


@dataclass(eq=False)
class Node:
    start: int  # offset in the expression source
    end: int
    type: Type | None = field(default=None, init=False)


@dataclass(eq=False)
class Literal(Node):
    value: Any


@dataclass(eq=False)
class Name(Node):
    ident: str


@dataclass(eq=False)
class Attribute(Node):
    obj: Node
    name: str


@dataclass(eq=False)
class Unary(Node):
    op: str  # "-" or "not"
    operand: Node


@dataclass(eq=False)
class Binary(Node):
    op: str  # + - * / // and or == != < <= > >= in "not in"
    left: Node
    right: Node


@dataclass(eq=False)
class Presence(Node):
    operand: Node
    present: bool  # "is present" (True) or "is absent" (False)


@dataclass(eq=False)
class Call(Node):
    func: str
    args: list[Node]


@dataclass(eq=False)
class Aggregate(Node):
    """``any/all/none/count(x in L where P)`` and ``max/min/sum(E for x in L where P)``."""

    func: str
    var: str
    source: Node
    where: Node | None
    value: Node | None  # the E of max/min/sum


@dataclass(eq=False)
class IfElse(Node):
    cond: Node
    then: Node
    orelse: Node


@dataclass(eq=False)
class ListLit(Node):
    items: list[Node]


def children(node: Node) -> list[Node]:
    """Direct sub-expressions, in source order."""
    if isinstance(node, Attribute):
        return [node.obj]
    if isinstance(node, Unary | Presence):
        return [node.operand]
    if isinstance(node, Binary):
        return [node.left, node.right]
    if isinstance(node, Call):
        return list(node.args)
    if isinstance(node, Aggregate):
        parts = [node.source]
        if node.value is not None:
            parts.append(node.value)
        if node.where is not None:
            parts.append(node.where)
        return parts
    if isinstance(node, IfElse):
        return [node.cond, node.then, node.orelse]
    if isinstance(node, ListLit):
        return list(node.items)
    return []


def path_of(node: Node) -> str | None:
    """``fund.last_rent_withdrawal_date`` for a name or a chain of attributes, else None."""
    if isinstance(node, Name):
        return node.ident
    if isinstance(node, Attribute):
        base = path_of(node.obj)
        return None if base is None else f"{base}.{node.name}"
    return None
