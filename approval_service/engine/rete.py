"""Translation of policy conditions into durable_rules (Rete) match conditions.

Each condition becomes one rule that matches its *failure* on the evaluation's
fact (one fact per evaluation carries the attributes of every rule; a fact that
matches several rules fires each of them). The rule also requires the optional
records the condition reads to be present (else it is skipped). The expression
tree is read with the negation pushed down to the atoms (De Morgan), and every
part that Rete can express stays in the rule:

- ``and`` / ``or`` / ``not`` -> ``&`` / ``|`` on the negated atoms;
- comparisons ``== != < <= > >=`` between a value and a literal
  (``m.x >= 3``) or between two values of the same fact (``m.x >= m.y``);
- ``x is present`` / ``x is absent`` -> ``+m.x`` / ``-m.x`` (an absent value is
  an attribute left out of the fact);
- ``x in [a, b]`` -> ``m.x == a | m.x == b``;
- ``starts_with(x, "3416")`` with a constant ASCII letters-and-digits prefix ->
  durable's anchored regex match (``m.x.matches("3416.*")``; its negation is an
  alternation of ``[^3].*``, ``3[^4].*``, ... and the shorter strings);
- a bool value in a test -> ``m.x == True``.

The values the atoms compare are attributes of the asserted fact: facts,
parameters, ``today`` and the policy's defines (computed by the interpreter's
``build_env``), and *precomputed* terms: anything else (date arithmetic,
function calls, list aggregates, if-then-else) is evaluated by the plain
tree-walking interpreter (:func:`approval_service.engine.interpreter.evaluate`),
never by the compiled backend. Encodings, because durable compares doubles and
JSON text: dates as ordinals, ``int``/``money`` as exact integers scaled by
10 000 (a value that does not scale exactly within 2**53 makes the condition
fall back to the interpreter for that evaluation), bools as JSON booleans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from durable.lang import m

from approval_service.engine.interpreter import evaluate
from approval_service.engine.trace import trace_points
from approval_service.policy import ast
from approval_service.policy.model import Condition, Policy

SCALE = 10_000  # money and int values are matched as integers in units of 0.0001
MAX_EXACT = 2**53  # doubles hold integers exactly up to here
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_NEGATE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}
_DOMAINS = {"int": "num", "money": "num", "date": "date", "text": "text", "bool": "bool"}


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
    """durable matches regexes on the JSON text: no characters JSON escapes."""
    return all(ch >= " " and ch not in '"\\' for ch in text)


@dataclass
class Attr:
    """One attribute of a condition's fact: a value the rule compares."""

    name: str
    source: str  # the expression text it holds
    origin: str  # fact | parameter | today | define | presence | precomputed
    domain: str  # num | date | text | bool | flag
    node: ast.Node | None = None  # None for a record-presence flag
    record: str | None = None  # for a presence flag: the record
    guards: list[ast.Node] = field(default_factory=list)  # inputs that may be None
    regex: bool = False  # matched by a regex: must be regex_safe

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


@dataclass
class RuleSpec:
    """The Rete rule of one condition and the attributes its fact carries."""

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

    def values(self, env: Mapping[str, Any]) -> dict[str, Any]:
        """This rule's attributes for one evaluation; raises Fallback if not exact."""
        out: dict[str, Any] = {}
        for attr in self.attrs:
            value = attr.value(env)
            if value is None:
                continue  # absent: left out of the fact
            if attr.domain == "flag":  # a present record
                out[attr.name] = 1
                continue
            encoded = encode(value, attr.domain)
            if attr.regex and not regex_safe(encoded):
                raise Fallback(f"{attr.source} has characters durable's regex cannot match")
            out[attr.name] = encoded
        return out


# Rete conditions are durable.lang values; True/False stand for constants.
Cond = Any


def _and(a: Cond, b: Cond) -> Cond:
    if a is False or b is False:
        return False
    if a is True:
        return b
    if b is True:
        return a
    return a & b


def _or(a: Cond, b: Cond) -> Cond:
    if a is True or b is True:
        return True
    if a is False:
        return b
    if b is False:
        return a
    return a | b


def _attr(name: str) -> Any:
    return getattr(m, name)


class Translator:
    """Turns one condition into a Rete match of its failure."""

    def __init__(self, policy: Policy, condition: Condition, index: int) -> None:
        self.policy = policy
        self.condition = condition
        self.index = index
        self.source = condition.require.source
        self.attrs: dict[str, Attr] = {}
        self._by_source: dict[tuple[str, str], str] = {}

    def rule(self) -> RuleSpec:
        """``fallback failed | (no fallback & records present & failure)``."""
        failure = self.cond(self.condition.require.node, want=False)
        guard: Cond = True
        for record in sorted(self.condition.require.reads):
            guard = _and(guard, +_attr(self.presence(record)))
        fallback = f"fb{self.index}"
        rete = _and(_and(-_attr(fallback), guard), failure)
        # `e == 1` marks the evaluation fact: durable also matches rules against
        # the session state, which has none of these attributes.
        match = _and(_attr("e") == 1, _or(_attr(fallback) == True, rete))  # noqa: E712
        name = f"c{self.index}_{self.condition.code}"
        return RuleSpec(
            self.index, self.condition, name, fallback, match, list(self.attrs.values())
        )

    # attributes ----------------------------------------------------------
    def text(self, node: ast.Node) -> str:
        return self.source[node.start : node.end]

    def attr(self, node: ast.Node) -> str:
        """The attribute holding a value node's value (added once per source text)."""
        assert node.type is not None
        domain = _DOMAINS.get(node.type.kind, "flag")  # a record or list: only its presence
        key = (self.text(node), domain)
        if key in self._by_source:
            return self._by_source[key]
        path = ast.path_of(node)
        head = path.split(".", 1)[0] if path else None
        if head == "today":
            name, origin = "today", "today"
        elif head in self.policy.parameters:
            name, origin = f"p_{head}", "parameter"
        elif head in {d.name for d in self.policy.defines} and path == head:
            name, origin = f"d_{head}", "define"
        elif path is not None and (head in self.policy.facts or head == "form"):
            name, origin = "f_" + path.replace(".", "__"), "fact"
        else:
            count = sum(a.origin == "precomputed" for a in self.attrs.values())
            name, origin = f"x{self.index}_{count}", "precomputed"
        guards = []
        if origin == "precomputed":
            guards = [n for _, n in trace_points(node, self.source) if ast.path_of(n)]
        self.attrs[name] = Attr(name, key[0], origin, domain, node, guards=guards)
        self._by_source[key] = name
        return name

    def presence(self, record: str) -> str:
        name = f"has_{record}"
        if name not in self.attrs:
            self.attrs[name] = Attr(name, f"{record} is present", "presence", "flag", record=record)
        return name

    def operand(self, node: ast.Node) -> tuple[str, Any]:
        """("lit", encoded) for a constant, else ("attr", name)."""
        value: Any = None
        if isinstance(node, ast.Literal):
            value = node.value
        elif isinstance(node, ast.Name) and node.ident in self.policy.deployment:
            value = self.policy.deployment[node.ident]
        elif (
            isinstance(node, ast.Unary)
            and node.op == "-"
            and isinstance(node.operand, ast.Literal)
            and not isinstance(node.operand.value, bool)
        ):
            value = -node.operand.value
        if value is not None and node.type is not None:
            try:
                return "lit", encode(value, _DOMAINS[node.type.kind])
            except Fallback:
                pass
        return "attr", self.attr(node)

    # conditions ----------------------------------------------------------
    def cond(self, node: ast.Node, want: bool) -> Cond:
        """A Rete condition true exactly when ``node`` evaluates to ``want``."""
        if isinstance(node, ast.Literal) and isinstance(node.value, bool):
            return node.value == want
        if isinstance(node, ast.Unary) and node.op == "not":
            return self.cond(node.operand, not want)
        if isinstance(node, ast.Binary) and node.op in ("and", "or"):
            left, right = self.cond(node.left, want), self.cond(node.right, want)
            return _and(left, right) if (node.op == "and") == want else _or(left, right)
        if isinstance(node, ast.Presence):
            return self._presence(node, want)
        if isinstance(node, ast.Binary) and node.op in _NEGATE:
            op = node.op if want else _NEGATE[node.op]
            return self.compare(node.left, op, node.right)
        if (
            isinstance(node, ast.Binary)
            and node.op in ("in", "not in")
            and isinstance(node.right, ast.ListLit)
        ):
            member = (node.op == "in") == want
            result: Cond = not member
            for item in node.right.items:
                test = self.compare(node.left, "==" if member else "!=", item)
                result = _or(result, test) if member else _and(result, test)
            return result
        if isinstance(node, ast.Call) and node.func == "starts_with":
            regex = self._starts_with(node, want)
            if regex is not None:
                return regex
        # a bool value: a path, a define or a precomputed term
        name = self.attr(node)
        test = _attr(name) == want
        if not want and node.type is not None and node.type.nullable:
            test = test | -_attr(name)
        return test

    def _presence(self, node: ast.Presence, want: bool) -> Cond:
        operand = node.operand
        if isinstance(operand, ast.Name) and self.policy.facts.get(operand.ident) is not None:
            decl = self.policy.facts[operand.ident]
            if decl.type.kind == "record":
                name = self.presence(operand.ident)
                return +_attr(name) if node.present == want else -_attr(name)
        name = self.attr(operand)
        return +_attr(name) if node.present == want else -_attr(name)

    def compare(self, left: ast.Node, op: str, right: ast.Node) -> Cond:
        lk, lv = self.operand(left)
        rk, rv = self.operand(right)
        if lk == "lit" and rk == "lit":
            lk, lv = "attr", self.attr(left)
        if lk == "lit":
            lk, lv, rk, rv, op = rk, rv, lk, lv, _FLIP[op]
            left, right = right, left
        a = _attr(lv)
        b = _attr(rv) if rk == "attr" else rv
        test = _cmp(a, op, b)
        if op not in ("==", "!="):
            return test  # ordered values are never absent (type checker)
        left_opt = bool(left.type and left.type.nullable)
        right_opt = rk == "attr" and bool(right.type and right.type.nullable)
        # a missing attribute matches no comparison; Python: None == None, None != x
        if op == "==" and left_opt and right_opt:
            test = test | (-a & -_attr(rv))
        if op == "!=":
            if left_opt:
                test = test | (-a & +_attr(rv)) if right_opt else test | -a
            if right_opt:
                test = test | (+a & -_attr(rv))
        return test

    def _starts_with(self, node: ast.Call, want: bool) -> Cond | None:
        kind, prefix = self.operand(node.args[1])
        if kind != "lit" or not prefix or not (prefix.isascii() and prefix.isalnum()):
            return None
        name = self.attr(node.args[0])
        self.attrs[name].regex = True
        x = _attr(name)
        if want:
            return x.matches(prefix + ".*")
        # not a prefix: differs at some position, or is shorter than the prefix
        test = x == ""
        if len(prefix) > 1:
            test = test | x.matches(f".{{1,{len(prefix) - 1}}}")
        for i, ch in enumerate(prefix):
            test = test | x.matches(f"{prefix[:i]}[^{ch}].*")
        return test


def _cmp(a: Any, op: str, b: Any) -> Cond:
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def translate(policy: Policy, condition: Condition, index: int) -> RuleSpec:
    return Translator(policy, condition, index).rule()
