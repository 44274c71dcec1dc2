from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from approval_service.policy import ast
from approval_service.policy.parser import ExprSyntaxError, parse_expression


def test_precedence_and_binds_tighter_than_or() -> None:
    node = parse_expression("a or b and c")
    assert isinstance(node, ast.Binary) and node.op == "or"
    assert isinstance(node.right, ast.Binary) and node.right.op == "and"


def test_arithmetic_precedence() -> None:
    node = parse_expression("1 + 2 * 3")
    assert isinstance(node, ast.Binary) and node.op == "+"
    assert isinstance(node.right, ast.Binary) and node.right.op == "*"


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("80", 80),
        ("0.01", Decimal("0.01")),
        ('"valid"', "valid"),
        ("'lost'", "lost"),
        ("true", True),
        ('date("2024-02-29")', date(2024, 2, 29)),
    ],
)
def test_literals(source: str, value: object) -> None:
    node = parse_expression(source)
    assert isinstance(node, ast.Literal)
    assert node.value == value and type(node.value) is type(value)


def test_aggregate_forms() -> None:
    count = parse_expression('count(c in cards where c.status == "lost")')
    assert isinstance(count, ast.Aggregate) and count.func == "count" and count.var == "c"
    assert count.where is not None and count.value is None
    latest = parse_expression("max(c.expires_on for c in cards)")
    assert isinstance(latest, ast.Aggregate) and latest.value is not None and latest.where is None


def test_not_in_and_presence() -> None:
    node = parse_expression('x not in ["a", "b"] and y is absent')
    assert isinstance(node, ast.Binary)
    assert isinstance(node.left, ast.Binary) and node.left.op == "not in"
    assert isinstance(node.right, ast.Presence) and node.right.present is False


def test_spans_point_at_source() -> None:
    source = "age >= min_age"
    node = parse_expression(source)
    assert isinstance(node, ast.Binary)
    assert source[node.right.start : node.right.end] == "min_age"


@pytest.mark.parametrize(
    ("source", "offset", "fragment"),
    [
        ("", 0, "empty"),
        ("age >= ", 7, "expected a value"),
        ("age = 80", 4, "unexpected character"),
        ("a < b < c", 6, "chained"),
        ("(a and b", 8, "expected ')'"),
        ('date("2025-02-30")', 5, "not a real date"),
        ("count(cards)", 6, "list binding"),
        ("x is not present", 5, "is absent"),
        ("a b", 2, "after a complete expression"),
        ("'open", 0, "unexpected character"),
    ],
)
def test_syntax_errors_point_at_the_problem(source: str, offset: int, fragment: str) -> None:
    with pytest.raises(ExprSyntaxError) as info:
        parse_expression(source)
    assert info.value.offset == offset
    assert fragment in info.value.message or fragment in (info.value.suggestion or "")
