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
- a bool value in a test -> ``m.x == True``;
- ``any/all/none(x in L where P)`` over a list fact, when ``P`` compares the
  item's fields with constants or with values of the fact (``today``, a
  parameter, a precomputed term not reading the item) -> durable's
  ``m.L.anyItem(P)`` / ``-m.L | m.L.allItems(not P)`` (an empty list is left out
  of the fact; ``item.expires_on >= m.today``).

The values the atoms compare are attributes of the asserted fact
(:mod:`approval_service.engine.rete_facts`): facts, parameters, ``today``, the
policy's defines (computed by the interpreter's ``build_env``), and
*precomputed* terms: anything else (date arithmetic, function calls, counts and
max/min, aggregates whose where-clause computes with the item, if-then-else)
is evaluated by the plain tree-walking interpreter, never by the compiled
backend. A missing attribute matches no comparison, so ``==``/``!=``
on values that may be absent add the explicit ``-m.x`` cases Python's
``None == None`` / ``None != x`` need.
"""

from __future__ import annotations

from typing import Any

from durable.lang import item, m

from approval_service.engine.rete_facts import DOMAINS, Attr, Fallback, RuleSpec, encode
from approval_service.engine.trace import trace_points
from approval_service.policy import ast
from approval_service.policy.model import Condition, Policy

_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_NEGATE = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}
_ITEM = "$i:"  # names of the current list item's fields, inside anyItem/allItems
_OUTER = "$m:"  # inside anyItem/allItems: an attribute of the fact (right of a comparison)


class _NotItemOnly(Exception):
    """A where-clause reads more than the list item and constants."""


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
    if name.startswith(_ITEM):
        return getattr(item, name[len(_ITEM) :])
    return getattr(m, name.removeprefix(_OUTER))


def _mentions(node: ast.Node, var: str) -> bool:
    if isinstance(node, ast.Name) and node.ident == var:
        return True
    return any(_mentions(child, var) for child in ast.children(node))


def _some(items: Any, test: Cond) -> Cond:
    """Some item of the list passes ``test`` (an empty list is left out of the fact)."""
    if test is True:
        return +items
    return False if test is False else items.anyItem(test)


def _every(items: Any, test: Cond) -> Cond:
    if test is True:
        return True
    return -items if test is False else -items | items.allItems(test)


class Translator:
    """Turns one condition into a Rete match of its failure."""

    def __init__(self, policy: Policy, condition: Condition, index: int) -> None:
        self.policy = policy
        self.condition = condition
        self.index = index
        self.source = condition.require.source
        self.attrs: dict[str, Attr] = {}
        self._by_source: dict[tuple[str, str], str] = {}
        # inside a where-clause: (variable, item field domains, regex fields)
        self._item: tuple[str, dict[str, str], set[str]] | None = None

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
        domain = DOMAINS.get(node.type.kind, "flag")  # a record or list: only its presence
        path = ast.path_of(node)
        if self._item is not None:
            var, fields, _ = self._item
            if path is not None and path.count(".") == 1 and path.startswith(var + "."):
                fields[path.split(".")[1]] = domain
                return _ITEM + path.split(".")[1]
            if _mentions(node, var):
                raise _NotItemOnly(self.text(node))
            inside, self._item = self._item, None  # a value of the fact: today, a parameter...
            try:
                return _OUTER + self.attr(node)
            finally:
                self._item = inside
        key = (self.text(node), domain)
        if key in self._by_source:
            return self._by_source[key]
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
                return "lit", encode(value, DOMAINS[node.type.kind])
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
        if isinstance(node, ast.Aggregate) and self._item is None:
            over_items = self._aggregate(node, want)
            if over_items is not None:
                return over_items
        # a bool value: a path, a define or a precomputed term
        name = self._not_outer(self.attr(node))
        test = _attr(name) == want
        if not want and node.type is not None and node.type.nullable:
            test = test | -_attr(name)
        return test

    def _aggregate(self, node: ast.Aggregate, want: bool) -> Cond | None:
        """any/all/none over a list fact with an item-only where: durable's anyItem/allItems."""
        source = node.source
        if node.func not in ("any", "all", "none") or not isinstance(source, ast.Name):
            return None
        decl = self.policy.facts.get(source.ident)
        if decl is None or decl.shape != "list":
            return None
        fields: dict[str, str] = {}
        regex: set[str] = set()
        passes, fails = True, False
        if node.where is not None:
            self._item = (node.var, fields, regex)
            attrs, by_source = dict(self.attrs), dict(self._by_source)
            try:
                passes, fails = self.cond(node.where, True), self.cond(node.where, False)
            except _NotItemOnly:
                self.attrs, self._by_source = attrs, by_source
                return None
            finally:
                self._item = None
        name = f"l_{source.ident}"
        if name not in self.attrs:
            self.attrs[name] = Attr(name, source.ident, "fact", "list", source)
        self.attrs[name].fields.update(fields)
        self.attrs[name].regex |= regex
        items = _attr(name)
        if node.func == "any":
            return _some(items, passes) if want else _every(items, fails)
        if node.func == "none":
            return _every(items, fails) if want else _some(items, passes)
        return _every(items, passes) if want else _some(items, fails)

    def _presence(self, node: ast.Presence, want: bool) -> Cond:
        operand = node.operand
        if isinstance(operand, ast.Name) and self.policy.facts.get(operand.ident) is not None:
            decl = self.policy.facts[operand.ident]
            if decl.type.kind == "record":
                name = self.presence(operand.ident)
                return +_attr(name) if node.present == want else -_attr(name)
        name = self._not_outer(self.attr(operand))
        return +_attr(name) if node.present == want else -_attr(name)

    def compare(self, left: ast.Node, op: str, right: ast.Node) -> Cond:
        lk, lv = self.operand(left)
        rk, rv = self.operand(right)
        if lk == "lit" and rk == "lit":
            lk, lv = "attr", self.attr(left)
        if lk == "lit":
            lk, lv, rk, rv, op = rk, rv, lk, lv, _FLIP[op]
            left, right = right, left
        if self._item is not None:  # item.x <op> literal or fact attribute
            if lv.startswith(_OUTER) and rk == "attr" and rv.startswith(_ITEM):
                lv, rv, op, left, right = rv, lv, _FLIP[op], right, left
            if not lv.startswith(_ITEM) or (rk == "attr" and not rv.startswith(_OUTER)):
                raise _NotItemOnly("compares two item fields or two fact values")
            if rk == "attr" and op in ("==", "!=") and right.type and right.type.nullable:
                raise _NotItemOnly("may-be-absent fact value")
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

    def _not_outer(self, name: str) -> str:
        """Inside anyItem/allItems a fact value may only be compared with an item field."""
        if name.startswith(_OUTER):
            raise _NotItemOnly(name)
        return name

    def _starts_with(self, node: ast.Call, want: bool) -> Cond | None:
        kind, prefix = self.operand(node.args[1])
        if kind != "lit" or not prefix or not (prefix.isascii() and prefix.isalnum()):
            return None
        name = self._not_outer(self.attr(node.args[0]))
        if name.startswith(_ITEM):
            assert self._item is not None
            self._item[2].add(name[len(_ITEM) :])
        else:
            self.attrs[name].regex.add("")
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
