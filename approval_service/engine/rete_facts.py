"""The values a durable_rules rule compares: attributes of the evaluation's fact.

durable_rules compares numbers as doubles and text as JSON text, so values are
encoded: dates as ordinals, ``int`` and ``money`` as exact integers in units of
0.0001 (``SCALE``), bools as JSON booleans, an absent value (``None``) as an
attribute left out of the fact, a list of records as a JSON array of encoded
records (left out when empty). A value that cannot be encoded exactly (money
with more than 4 decimals, beyond 2**53 once scaled) raises :class:`Fallback`:
the condition is then decided by the interpreter for that evaluation.

Every value is computed by the plain tree-walking interpreter
(:func:`approval_service.engine.interpreter.evaluate`; defines by its
``build_env``), never by the compiled backend's generated code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from typing import Any

from approval_service.engine.interpreter import evaluate
from approval_service.policy import ast
from approval_service.policy.model import Condition

SCALE = 10_000  # money and int values are matched as integers in units of 0.0001
MAX_EXACT = 2**53  # doubles hold integers exactly up to here
DOMAINS = {"int": "num", "money": "num", "date": "date", "text": "text", "bool": "bool"}


class Fallback(Exception):
    """A value of this evaluation cannot be matched exactly in Rete."""


def encode(value: Any, domain: str) -> Any:
    """The JSON value durable compares for a policy value (never None)."""
    if domain == "date":
        assert isinstance(value, date)
        return value.toordinal()
    if domain == "num":
        scaled = value * SCALE
        if isinstance(scaled, Decimal):
            if scaled != scaled.to_integral_value():
                raise Fallback(f"{value} has more than 4 decimals")
            scaled = int(scaled)
        if abs(scaled) > MAX_EXACT:
            raise Fallback(f"{value} is too large for a double")
        return int(scaled)
    if domain == "text":
        return str(value)
    return bool(value)


def regex_safe(text: str) -> bool:
    """durable matches regexes on the JSON text: no characters JSON escapes.

    (For a letters-and-digits prefix an escape could not change the answer;
    this is kept conservative because durable's regex engine is undocumented.)
    """
    return all(ch >= " " and ch not in '"\\' for ch in text)


@dataclass
class Attr:
    """One attribute of the evaluation's fact: a value a rule compares."""

    name: str
    source: str  # the expression text it holds
    origin: str  # fact | parameter | today | define | presence | precomputed
    domain: str  # num | date | text | bool | flag | list
    node: ast.Node | None = None  # None for a record-presence flag
    record: str | None = None  # for a presence flag: the record
    guards: list[ast.Node] = field(default_factory=list)  # inputs that may be None
    regex: set[str] = field(default_factory=set)  # matched by a regex ("" = the value)
    fields: dict[str, str] = field(default_factory=dict)  # a list's item fields: domain

    def value(self, env: Mapping[str, Any]) -> Any:
        if self.record is not None:
            return 1 if env[self.record] is not None else None
        assert self.node is not None
        if self.origin != "precomputed":
            return evaluate(self.node, env)
        try:
            return evaluate(self.node, env)
        except Exception as exc:
            # An input is absent: the type checker guarantees a guard
            # (`x is present and ...`) keeps the other backends from
            # evaluating this term, so it is left out of the fact.
            if any(evaluate(g, env) is None for g in self.guards):
                return None
            raise Fallback(f"{self.source}: {exc!r}") from exc

    def encoded(self, value: Any) -> Any:
        if self.domain == "flag":  # a present record
            return 1
        if self.domain == "list":
            return [self._item(item) for item in value] or None
        out = encode(value, self.domain)
        if self.regex and not regex_safe(out):
            raise Fallback(f"{self.source} has characters durable's regex cannot match")
        return out

    def _item(self, item: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for name, domain in self.fields.items():
            value = item[name]
            if value is not None:
                out[name] = encode(value, domain)
                if name in self.regex and not regex_safe(out[name]):
                    raise Fallback(f"{self.source}.{name} has characters a regex cannot match")
        return out


@dataclass
class RuleSpec:
    """The Rete rule of one condition and the attributes it reads."""

    index: int
    condition: Condition
    name: str
    fallback: str  # the attribute set when the interpreter decided instead
    match: Any  # a durable.lang value (condition on the fact `m`)
    attrs: list[Attr]

    @property
    def precomputed(self) -> list[str]:
        """Source texts of the values the interpreter computes for this rule."""
        return [a.source for a in self.attrs if a.origin in ("precomputed", "define")]

    @property
    def definition(self) -> dict[str, Any]:
        """The rule as durable_rules JSON (without its action)."""
        return {"all": [{"m": self.match.define()}]}


_FAILED = object()


class FactBuilder:
    """Builds the evaluation's fact: each attribute computed once, for every rule reading it."""

    def __init__(self, rules: list[RuleSpec]) -> None:
        self.attrs: dict[str, Attr] = {}
        for spec in rules:
            for attr in spec.attrs:
                known = self.attrs.get(attr.name)
                if known is None:  # a copy: a list read by several rules encodes all fields
                    self.attrs[attr.name] = replace(
                        attr, regex=set(attr.regex), fields=dict(attr.fields)
                    )
                else:
                    known.regex |= attr.regex
                    known.fields.update(attr.fields)

    def add(
        self, fact: dict[str, Any], cache: dict[str, Any], spec: RuleSpec, env: Mapping[str, Any]
    ) -> bool:
        """Add ``spec``'s attributes to ``fact``; False when one cannot be matched exactly.

        ``cache`` holds this evaluation's encoded values by attribute name.
        """
        for attr in spec.attrs:
            name = attr.name
            if name not in cache:
                try:
                    value = self.attrs[name].value(env)
                    cache[name] = None if value is None else self.attrs[name].encoded(value)
                except Fallback:
                    cache[name] = _FAILED
            if cache[name] is _FAILED:
                return False
        for attr in spec.attrs:
            if cache[attr.name] is not None:  # absent values and empty lists are left out
                fact[attr.name] = cache[attr.name]
        return True
