"""Turning what an author wrote in YAML into values of the policy language's types.

Strict on purpose: YAML guesses types (``341602`` is a number, ``60.5`` a binary
float, ``2026-11-23 10:00`` a timestamp), and a test that passes because of a
guess is worse than an error that says how to write the value.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from approval_service.errors import Location
from approval_service.policy.types import Type

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class BadValue(Exception):
    """A value does not fit its type; ``fix`` tells the author how to write it."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def parse_date(value: Any) -> date:
    """A YAML date or an ISO ``YYYY-MM-DD`` string."""
    if isinstance(value, datetime):
        raise BadValue(f"`{value}` has a time of day", "write only the date, like 2026-11-23")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise BadValue(
                f"`{value}` is not a real calendar date", "check the month and the day"
            ) from None
    raise BadValue(f"`{value}` is not a date", "write dates as YYYY-MM-DD, like 2026-11-23")


def convert(value: Any, typ: Type) -> Any:
    """``value`` as a Python value of the scalar type ``typ``; raises :class:`BadValue`."""
    if value is None:
        if typ.nullable:
            return None
        raise BadValue(f"null is not allowed for a {typ}", "give a value")
    kind = typ.kind
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise BadValue(f"`{value}` is not true or false", "write true or false")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise BadValue(f"`{value}` is not a whole number", "write digits only, like 36")
    if kind == "money":
        return _money(value)
    if kind == "text":
        if isinstance(value, str):
            return value
        raise BadValue(
            f"`{value}` is not text (YAML read it as a {_yaml_kind(value)})",
            f'put it in double quotes: "{value}"',
        )
    if kind == "date":
        return parse_date(value)
    raise BadValue(f"a {typ} cannot be written in a case file", "give single values only")


def _money(value: Any) -> Decimal:
    if isinstance(value, float):
        raise BadValue(
            f"money `{value}` is written as a bare decimal number, which YAML reads as an "
            "inexact binary float",
            f'put money in double quotes: "{value:.2f}"',
        )
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            amount = Decimal("NaN")
        if amount.is_finite():
            return amount
    raise BadValue(f"`{value}` is not an amount of money", 'write yuan in quotes, like "60.00"')


def _yaml_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false value"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, date):
        return "date"
    return type(value).__name__


def show(value: Any) -> str:
    """A value as an author would write it: ``60.00``, ``2026-12-01``, ``null``, ``[A, B]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def bad_timestamp_at(text: str, path: str) -> Location:
    """Where the first YAML date that is not a real date stands (PyYAML fails on it)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    pending: list[yaml.Node] = [root] if root is not None else []
    while pending:
        node = pending.pop(0)
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":timestamp"):
            try:
                date.fromisoformat(node.value[:10])
            except ValueError:
                return Location(path, node.start_mark.line + 1, node.start_mark.column + 1)
        elif isinstance(node, yaml.MappingNode):
            pending += [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            pending += node.value
    return Location(path)
