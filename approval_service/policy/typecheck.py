"""Type checking of policy expressions against the declared facts.

Besides the type of every node it works out ``reads``: the optional records
(``person``, ``fund``, …) an expression depends on. A condition is skipped when
one of those is absent (the handbook: a condition whose data is absent is not
evaluated). ``x is present`` / ``x is absent`` test a record without reading it.

Values that may be absent (``date?``) must be tested before use; the checker
narrows them: in ``d is absent or today >= add_months(d, 3)`` the right side
sees ``d`` as present.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from approval_service.policy import ast
from approval_service.policy.functions import FUNCTIONS
from approval_service.policy.parser import PREDICATES
from approval_service.policy.types import BOOL, DATE, INT, MONEY, TEXT, Type, list_of, numeric_join


class ExprTypeError(Exception):
    def __init__(self, message: str, node: ast.Node, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.node = node
        self.suggestion = suggestion


@dataclass(frozen=True)
class Symbol:
    type: Type
    kind: str  # fact, param, define, context, form, var
    reads: frozenset[str] = frozenset()  # for defines: the optional records they read
    optional_record: bool = False  # a fact that may be absent as a whole


@dataclass
class Checked:
    type: Type
    reads: set[str] = field(default_factory=set)


def did_you_mean(name: str, options: list[str]) -> str | None:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def _present_when_true(node: ast.Node) -> set[str]:
    """Paths known to be present when ``node`` is true."""
    if isinstance(node, ast.Presence) and node.present:
        path = ast.path_of(node.operand)
        return {path} if path else set()
    if isinstance(node, ast.Binary) and node.op == "and":
        return _present_when_true(node.left) | _present_when_true(node.right)
    if isinstance(node, ast.Unary) and node.op == "not":
        return _present_when_false(node.operand)
    return set()


def _present_when_false(node: ast.Node) -> set[str]:
    """Paths known to be present when ``node`` is false."""
    if isinstance(node, ast.Presence) and not node.present:
        path = ast.path_of(node.operand)
        return {path} if path else set()
    if isinstance(node, ast.Binary) and node.op == "or":
        return _present_when_false(node.left) | _present_when_false(node.right)
    if isinstance(node, ast.Unary) and node.op == "not":
        return _present_when_true(node.operand)
    return set()


class Checker:
    def __init__(self, scope: dict[str, Symbol]) -> None:
        self.scope = scope
        self.source = ""

    def check(self, node: ast.Node, source: str = "") -> Checked:
        self.source = source
        out = Checked(BOOL)
        out.type = self._visit(node, self.scope, frozenset(), out.reads)
        return out

    def _visit(
        self, node: ast.Node, scope: dict[str, Symbol], narrowed: frozenset[str], reads: set[str]
    ) -> Type:
        typ = self._infer(node, scope, narrowed, reads)
        node.type = typ
        return typ

    def _value(
        self,
        node: ast.Node,
        scope: dict[str, Symbol],
        narrowed: frozenset[str],
        reads: set[str],
        what: str,
    ) -> Type:
        """Visit a sub-expression whose value must be present (used in arithmetic, ordering…)."""
        typ = self._visit(node, scope, narrowed, reads)
        if typ.nullable:
            path = ast.path_of(node)
            if path is None:
                text = self.source[node.start : node.end] or "this value"
                raise ExprTypeError(
                    f"`{text}` may be absent, so it cannot be used {what}",
                    node,
                    "name it under `define:` and test the name first, "
                    "e.g. `latest is absent or latest <= today`",
                )
            raise ExprTypeError(
                f"`{path}` may be absent, so it cannot be used {what}",
                node,
                f"test it first, e.g. `{path} is absent or …` / `{path} is present and …`",
            )
        return typ

    def _infer(
        self, node: ast.Node, scope: dict[str, Symbol], narrowed: frozenset[str], reads: set[str]
    ) -> Type:
        if isinstance(node, ast.Literal):
            return _literal_type(node.value)
        if isinstance(node, ast.Name):
            return self._name(node, scope, narrowed, reads)
        if isinstance(node, ast.Attribute):
            return self._attribute(node, scope, narrowed, reads)
        if isinstance(node, ast.Presence):
            return self._presence(node, scope, narrowed, reads)
        if isinstance(node, ast.Unary):
            if node.op == "not":
                self._expect(node.operand, BOOL, scope, narrowed, reads, "after not")
                return BOOL
            typ = self._value(node.operand, scope, narrowed, reads, "with a minus sign")
            if not typ.is_numeric:
                raise ExprTypeError(f"cannot negate a {typ}", node)
            return typ
        if isinstance(node, ast.Binary):
            return self._binary(node, scope, narrowed, reads)
        if isinstance(node, ast.IfElse):
            self._expect(node.cond, BOOL, scope, narrowed, reads, "as the if condition")
            then = self._visit(node.then, scope, narrowed | _present_when_true(node.cond), reads)
            orelse = self._visit(
                node.orelse, scope, narrowed | _present_when_false(node.cond), reads
            )
            joined = _join(then, orelse)
            if joined is None:
                raise ExprTypeError(f"the branches of if differ: {then} and {orelse}", node)
            return joined
        if isinstance(node, ast.ListLit):
            if not node.items:
                raise ExprTypeError("an empty list cannot be typed", node)
            kinds = [self._value(i, scope, narrowed, reads, "in a list") for i in node.items]
            item = kinds[0]
            for other in kinds[1:]:
                joined = _join(item, other)
                if joined is None:
                    raise ExprTypeError(f"list items differ: {item} and {other}", node)
                item = joined
            return list_of(item)
        if isinstance(node, ast.Call):
            return self._call(node, scope, narrowed, reads)
        if isinstance(node, ast.Aggregate):
            return self._aggregate(node, scope, narrowed, reads)
        raise ExprTypeError(f"unknown expression {type(node).__name__}", node)

    def _expect(
        self,
        node: ast.Node,
        want: Type,
        scope: dict[str, Symbol],
        narrowed: frozenset[str],
        reads: set[str],
        where: str,
    ) -> None:
        typ = self._value(node, scope, narrowed, reads, where)
        if typ.kind != want.kind:
            raise ExprTypeError(f"expected {want} {where}, found {typ}", node)

    def _name(
        self, node: ast.Name, scope: dict[str, Symbol], narrowed: frozenset[str], reads: set[str]
    ) -> Type:
        symbol = scope.get(node.ident)
        if symbol is None:
            raise ExprTypeError(
                f"unknown name `{node.ident}`",
                node,
                did_you_mean(node.ident, sorted(scope))
                or "declare it under facts, parameters or define",
            )
        reads |= symbol.reads
        if symbol.optional_record:
            raise ExprTypeError(
                f"`{node.ident}` is a whole record; use one of its fields or test it",
                node,
                f"e.g. `{node.ident}.{symbol.type.field_names()[0]}` or `{node.ident} is present`",
            )
        typ = symbol.type
        return typ.non_null() if node.ident in narrowed else typ

    def _attribute(
        self,
        node: ast.Attribute,
        scope: dict[str, Symbol],
        narrowed: frozenset[str],
        reads: set[str],
    ) -> Type:
        base = node.obj
        if isinstance(base, ast.Name) and base.ident in scope and scope[base.ident].optional_record:
            symbol = scope[base.ident]
            if base.ident not in narrowed:
                reads.add(base.ident)
            base.type = symbol.type.non_null()
            owner = base.type
        else:
            owner = self._visit(base, scope, narrowed, reads)
        if owner.kind != "record":
            raise ExprTypeError(f"a {owner} has no fields", node)
        field_type = owner.field_type(node.name)
        if field_type is None:
            raise ExprTypeError(
                f"{owner} has no field `{node.name}`",
                node,
                did_you_mean(node.name, owner.field_names())
                or f"its fields are {', '.join(owner.field_names())}",
            )
        path = ast.path_of(node)
        return field_type.non_null() if path in narrowed else field_type

    def _presence(
        self,
        node: ast.Presence,
        scope: dict[str, Symbol],
        narrowed: frozenset[str],
        reads: set[str],
    ) -> Type:
        operand = node.operand
        if (
            isinstance(operand, ast.Name)
            and operand.ident in scope
            and scope[operand.ident].optional_record
        ):
            operand.type = scope[operand.ident].type
            return BOOL
        typ = self._visit(operand, scope, narrowed, reads)
        if not typ.nullable:
            raise ExprTypeError(
                f"`{ast.path_of(operand) or 'this value'}` is never absent, so the test is always "
                f"{'true' if node.present else 'false'}",
                node,
            )
        return BOOL

    def _binary(
        self, node: ast.Binary, scope: dict[str, Symbol], narrowed: frozenset[str], reads: set[str]
    ) -> Type:
        op = node.op
        if op in ("and", "or"):
            self._expect(node.left, BOOL, scope, narrowed, reads, f"before {op}")
            extra = _present_when_true(node.left) if op == "and" else _present_when_false(node.left)
            self._expect(node.right, BOOL, scope, narrowed | extra, reads, f"after {op}")
            return BOOL
        if op in ("==", "!="):
            left = self._visit(node.left, scope, narrowed, reads)
            right = self._visit(node.right, scope, narrowed, reads)
            if _join(left, right) is None or left.kind in ("record", "list"):
                raise ExprTypeError(f"cannot compare {left} with {right}", node)
            return BOOL
        if op in ("in", "not in"):
            left = self._visit(node.left, scope, narrowed, reads)
            right = self._value(node.right, scope, narrowed, reads, f"after {op}")
            if right.kind != "list" or right.item is None or _join(left, right.item) is None:
                raise ExprTypeError(
                    f"`{op}` needs a list of {left.non_null()} on the right, found {right}",
                    node,
                    'e.g. fund.status in ["sealed", "frozen"]',
                )
            return BOOL
        left = self._value(node.left, scope, narrowed, reads, f"with {op}")
        right = self._value(node.right, scope, narrowed, reads, f"with {op}")
        if op in ("<", "<=", ">", ">="):
            if left.kind == right.kind == "date" or numeric_join(left, right):
                return BOOL
            raise ExprTypeError(f"cannot order {left} and {right} with {op}", node)
        if "date" in (left.kind, right.kind):
            raise ExprTypeError(
                f"dates do not take {op}", node, "use add_days/add_months/add_years or days_between"
            )
        joined = numeric_join(left, right)
        if joined is None:
            raise ExprTypeError(f"{op} needs numbers, found {left} and {right}", node)
        if op == "/":
            if left.kind != "money":
                raise ExprTypeError("/ divides money", node, "use // for whole-number division")
            return MONEY
        if op == "//" and joined.kind != "int":
            raise ExprTypeError("// divides whole numbers", node, "use / to divide money")
        return joined

    def _call(
        self, node: ast.Call, scope: dict[str, Symbol], narrowed: frozenset[str], reads: set[str]
    ) -> Type:
        func = FUNCTIONS.get(node.func)
        if func is None:
            raise ExprTypeError(
                f"unknown function `{node.func}`",
                node,
                did_you_mean(node.func, sorted(FUNCTIONS) + list(PREDICATES) + ["sum"]),
            )
        if len(node.args) != len(func.params):
            raise ExprTypeError(
                f"{node.func}() takes {len(func.params)} arguments, got {len(node.args)}", node
            )
        types = [
            self._value(arg, scope, narrowed, reads, f"as an argument of {node.func}()")
            for arg in node.args
        ]
        joined: Type | None = None
        for param, arg, typ in zip(func.params, node.args, types, strict=True):
            if isinstance(param, Type):
                if typ.kind != param.kind:
                    raise ExprTypeError(f"{node.func}() expects {param} here, found {typ}", arg)
            else:
                joined = typ if joined is None else _join(joined, typ)
                if joined is None or joined.kind not in ("int", "money", "date"):
                    raise ExprTypeError(f"{node.func}() needs two numbers or two dates", node)
        if isinstance(func.returns, Type):
            return func.returns
        assert joined is not None
        return joined

    def _aggregate(
        self,
        node: ast.Aggregate,
        scope: dict[str, Symbol],
        narrowed: frozenset[str],
        reads: set[str],
    ) -> Type:
        source = self._value(node.source, scope, narrowed, reads, f"as the list of {node.func}()")
        if source.kind != "list" or source.item is None:
            raise ExprTypeError(f"{node.func}() goes over a list, found {source}", node.source)
        if node.var in scope and scope[node.var].kind != "var":
            raise ExprTypeError(
                f"`{node.var}` already names something else", node, "pick another letter"
            )
        inner = {**scope, node.var: Symbol(source.item, "var")}
        if node.where is not None:
            self._expect(node.where, BOOL, inner, narrowed, reads, "after where")
        if node.func in PREDICATES:
            return INT if node.func == "count" else BOOL
        assert node.value is not None
        value = self._value(node.value, inner, narrowed, reads, f"in {node.func}()")
        if node.func == "sum":
            if not value.is_numeric:
                raise ExprTypeError(f"sum() adds numbers, found {value}", node.value)
            return value
        if value.kind not in ("int", "money", "date"):
            raise ExprTypeError(f"{node.func}() needs numbers or dates, found {value}", node.value)
        return value.maybe()


def _literal_type(value: object) -> Type:
    from datetime import date
    from decimal import Decimal

    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, Decimal):
        return MONEY
    if isinstance(value, date):
        return DATE
    return TEXT


def _join(a: Type, b: Type) -> Type | None:
    """A common type of two values (for == and if branches), or None."""
    nullable = a.nullable or b.nullable
    if a.kind == b.kind and a.kind not in ("record", "list"):
        return a.maybe() if nullable else a.non_null()
    joined = numeric_join(a, b)
    if joined is None:
        return None
    return joined.maybe() if nullable else joined
