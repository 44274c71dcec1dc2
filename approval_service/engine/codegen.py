"""Expression code generation for the compiled backend.

Optimisations, each keeping the meaning of the tree:

- *per-day constants*: a sub-expression that depends only on ``today``,
  parameters and deployment settings (``add_days(today, -365)``,
  ``next_month_start(today)``) is computed once per business date and cached
  with the parameter values;
- *aggregates as loops*: ``any/count/…`` over a list whose body reads only
  the element, list facts and per-day values become a ``for`` loop statement
  before the condition, instead of a generator expression;
- ``age_on(x, today)`` is written out inline against the cached year and
  (month, day) of ``today``;
- money results skip the ``Decimal()`` conversion when the value is one already.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from approval_service.errors import EvaluationError
from approval_service.policy import ast
from approval_service.policy.model import Policy

_OPS = {"==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "//", "in", "not in", "and", "or"}


class ExprGen:
    """Turns checked expressions into Python source; collects constants and hoisted code."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.consts: dict[str, Any] = {}
        self.day_values: list[str] = []  # per-day expressions, by index
        self._day_index: dict[str, int] = {}
        self.pre: list[str] = []  # statements to emit before the current one
        self._temp = 0
        self.kinds: dict[str, str] = {"today": "today", "form": "form"}
        self.kinds.update({n: "deploy" for n in policy.deployment})
        self.kinds.update({n: "param" for n in policy.parameters})
        self.kinds.update({n: "fact" for n in policy.facts})
        self.kinds.update({d.name: "define" for d in policy.defines})
        self.list_facts = {n for n, f in policy.facts.items() if f.shape == "list"}
        self.define_nodes = {d.name: d.expr.node for d in policy.defines}

    # helpers -------------------------------------------------------------
    def const(self, value: Any) -> str:
        for name, existing in self.consts.items():
            if type(existing) is type(value) and existing == value:
                return name
        name = f"_k{len(self.consts)}"
        self.consts[name] = value
        return name

    def temp(self) -> str:
        self._temp += 1
        return f"_t{self._temp}"

    def day_value(self, code: str) -> str:
        """A per-day cached value computed by ``code`` (which may use today and p_*)."""
        if code not in self._day_index:
            self._day_index[code] = len(self.day_values)
            self.day_values.append(code)
        return f"h{self._day_index[code]}"

    def take_pre(self) -> list[str]:
        out, self.pre = self.pre, []
        return out

    def local(self, ident: str, bound: frozenset[str]) -> str:
        if ident in bound:
            return f"v_{ident}"
        kind = self.kinds[ident]
        if kind in ("today", "form"):
            return ident
        if kind == "deploy":
            return repr(self.policy.deployment[ident])
        return {"param": "p_", "fact": "f_", "define": "d_"}[kind] + ident

    def is_day_constant(self, node: ast.Node, bound: frozenset[str] = frozenset()) -> bool:
        if isinstance(node, ast.Name):
            return node.ident not in bound and self.kinds.get(node.ident) in (
                "today",
                "deploy",
                "param",
            )
        if isinstance(node, ast.Literal):
            return True
        if isinstance(node, ast.Aggregate | ast.Attribute):
            return False
        return all(self.is_day_constant(c, bound) for c in ast.children(node))

    def hoistable(self, node: ast.Aggregate, bound: frozenset[str]) -> bool:
        """Whether an aggregate may be computed as a loop before its statement."""
        inner = bound | {node.var}

        def ok(n: ast.Node) -> bool:
            if isinstance(n, ast.Name):
                return (
                    n.ident in inner
                    or self.kinds.get(n.ident) in ("today", "deploy", "param")
                    or n.ident in self.list_facts
                )
            if isinstance(n, ast.Aggregate):
                return False
            return all(ok(c) for c in ast.children(n))

        return (
            not bound
            and isinstance(node.source, ast.Name)
            and node.source.ident in self.list_facts
            and all(ok(c) for c in ast.children(node))
        )

    def first_of_month(self, node: ast.Node) -> bool:
        """Whether a date expression is always the first day of a month."""
        if isinstance(node, ast.Literal):
            return isinstance(node.value, date) and node.value.day == 1
        if isinstance(node, ast.Call):
            if node.func in ("month_start", "next_month_start"):
                return True
            return node.func in ("add_months", "add_years") and self.first_of_month(node.args[0])
        if isinstance(node, ast.IfElse):
            return self.first_of_month(node.then) and self.first_of_month(node.orelse)
        if isinstance(node, ast.Name) and self.kinds.get(node.ident) == "define":
            return self.first_of_month(self.define_nodes[node.ident])
        return False

    @staticmethod
    def is_decimal(node: ast.Node) -> bool:
        """Whether a money expression's value is certainly a Decimal at run time."""
        if isinstance(node, ast.Literal):
            return isinstance(node.value, Decimal)
        if node.type is None or node.type.kind != "money":
            return False
        if isinstance(node, ast.IfElse):
            return ExprGen.is_decimal(node.then) and ExprGen.is_decimal(node.orelse)
        if isinstance(node, ast.Binary):
            if node.op == "/":
                return True
            return ExprGen.is_decimal(node.left) or ExprGen.is_decimal(node.right)
        if isinstance(node, ast.Call):
            return all(ExprGen.is_decimal(a) for a in node.args)
        if isinstance(node, ast.Aggregate):
            return node.func == "sum" or (node.value is not None and ExprGen.is_decimal(node.value))
        return True  # a money fact, field, parameter or define

    # expressions ---------------------------------------------------------
    def expr(self, node: ast.Node, bound: frozenset[str] = frozenset()) -> str:
        if not isinstance(node, ast.Name | ast.Literal) and self.is_day_constant(node, bound):
            return self.day_value(self._expr(node, bound, in_day=True))
        return self._expr(node, bound)

    def _expr(self, node: ast.Node, bound: frozenset[str], in_day: bool = False) -> str:
        e = (lambda n, b=bound: self._expr(n, b, True)) if in_day else self.expr
        if isinstance(node, ast.Literal):
            value = node.value
            if isinstance(value, bool | int | str):
                return repr(value)
            return self.const(value)
        if isinstance(node, ast.Name):
            return self.local(node.ident, bound)
        if isinstance(node, ast.Attribute):
            obj = e(node.obj, bound)
            if isinstance(node.obj, ast.Name) and node.obj.ident == "form" and "form" not in bound:
                return f"{obj}.get({node.name!r})"
            return f"{obj}[{node.name!r}]"
        if isinstance(node, ast.Presence):
            return f"({e(node.operand, bound)} is {'not ' if node.present else ''}None)"
        if isinstance(node, ast.Unary):
            inner = e(node.operand, bound)
            return f"(not {inner})" if node.op == "not" else f"(-{inner})"
        if isinstance(node, ast.Binary):
            left, right = e(node.left, bound), e(node.right, bound)
            if node.op in _OPS:
                return f"({left} {node.op} {right})"
            if node.op == "/":
                return f"(_Decimal({left}) / _Decimal({right}))"
            raise EvaluationError(f"unknown operator {node.op}")
        if isinstance(node, ast.IfElse):
            return f"({e(node.then, bound)} if {e(node.cond, bound)} else {e(node.orelse, bound)})"
        if isinstance(node, ast.ListLit):
            if all(isinstance(i, ast.Literal) for i in node.items):
                return self.const(
                    frozenset(i.value for i in node.items if isinstance(i, ast.Literal))
                )
            return "(" + "".join(f"{e(i, bound)}, " for i in node.items) + ")"
        if isinstance(node, ast.Call):
            return self._call(node, bound, in_day)
        if isinstance(node, ast.Aggregate):
            return self._aggregate(node, bound)
        raise EvaluationError(f"cannot compile {type(node).__name__}")

    def _call(self, node: ast.Call, bound: frozenset[str], in_day: bool) -> str:
        if node.func == "age_on" and not in_day and self.is_day_constant(node.args[1], bound):
            day = self.expr(node.args[1], bound)  # "today" or a per-day value
            year = self.day_value(f"{day}.year")
            month_day = self.day_value(f"({day}.month, {day}.day)")
            birth = self.temp()
            return (
                f"({year} - ({birth} := {self.expr(node.args[0], bound)}).year"
                f" - ({month_day} < ({birth}.month, {birth}.day)))"
            )
        args = [self._expr(a, bound, True) if in_day else self.expr(a, bound) for a in node.args]
        if node.func == "starts_with":
            return f"{args[0]}.startswith({args[1]})"
        if (
            node.func in ("add_months", "add_years")
            and not in_day
            and self.first_of_month(node.args[0])
        ):
            # the first of a month plus whole months is the first of a month: no clamping
            t, y = self.temp(), self.temp()
            months = args[1] if node.func == "add_months" else f"12 * {args[1]}"
            return (
                f"_date(({y} := ({t} := {args[0]}).year * 12 + {t}.month - 1 + {months}) // 12,"
                f" {y} % 12 + 1, 1)"
            )
        if node.func == "month_start":
            d = self.temp()
            return f"_date(({d} := {args[0]}).year, {d}.month, 1)"
        if node.func == "months_between":
            a, b = self.temp(), self.temp()
            return (
                f"((({b} := {args[1]}).year - ({a} := {args[0]}).year) * 12"
                f" + {b}.month - {a}.month)"
            )
        if node.func in ("min", "max"):
            a, b = self.temp(), self.temp()
            op = "<=" if node.func == "min" else ">="
            return f"({a} if ({a} := {args[0]}) {op} ({b} := {args[1]}) else {b})"
        return f"_fn_{node.func}({', '.join(args)})"

    def _aggregate(self, node: ast.Aggregate, bound: frozenset[str]) -> str:
        inner = bound | {node.var}
        var = f"v_{node.var}"
        source = self.expr(node.source, bound)
        where = self.expr(node.where, inner) if node.where is not None else None
        value = self.expr(node.value, inner) if node.value is not None else None
        if self.hoistable(node, bound):
            return self._loop(node, var, source, where, value)
        cond = f" if {where}" if where else ""
        if node.func in ("any", "all"):
            return f"{node.func}({where or 'True'} for {var} in {source})"
        if node.func == "none":
            return f"(not any({where or 'True'} for {var} in {source}))"
        if node.func == "count":
            return f"sum(1 for {var} in {source}{cond})"
        assert node.value is not None and node.value.type is not None
        if node.func == "sum":
            start = self.const(Decimal("0")) if node.value.type.kind == "money" else "0"
            return f"sum(({value} for {var} in {source}{cond}), {start})"
        return f"{node.func}(({value} for {var} in {source}{cond}), default=None)"

    def _loop(
        self, node: ast.Aggregate, var: str, source: str, where: str | None, value: str | None
    ) -> str:
        out = self.temp()
        body: list[str]
        func = node.func
        if func in ("any", "none", "all"):
            test = where or "True"
            start, flipped, check = {
                "any": ("False", "True", test),
                "none": ("True", "False", test),
                "all": ("True", "False", f"not {test}"),
            }[func]
            body = [
                f"{out} = {start}",
                f"for {var} in {source}:",
                f"    if {check}:",
                f"        {out} = {flipped}",
                "        break",
            ]
        elif func == "count":
            body = [f"{out} = 0", f"for {var} in {source}:"]
            body += [f"    if {where}:", f"        {out} += 1"] if where else [f"    {out} += 1"]
        else:
            assert node.value is not None and node.value.type is not None
            if func == "sum":
                start = self.const(Decimal("0")) if node.value.type.kind == "money" else "0"
                step = [f"{out} += {value}"]
            else:
                start = "None"
                cmp = ">" if func == "max" else "<"
                x = self.temp()
                step = [
                    f"{x} = {value}",
                    f"if {out} is None or {x} {cmp} {out}:",
                    f"    {out} = {x}",
                ]
            body = [f"{out} = {start}", f"for {var} in {source}:"]
            if where:
                body += [f"    if {where}:"] + [f"        {s}" for s in step]
            else:
                body += [f"    {s}" for s in step]
        self.pre.extend(body)
        return out
