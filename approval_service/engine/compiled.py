"""The default backend: each policy compiled once into a Python function.

:mod:`approval_service.engine.codegen` writes straight-line Python for the
policy's checked tree (one local per fact, parameter and derived value, one
``if`` per condition, reasons as prebuilt constants); ``compile()`` turns it
into a function. Only the generator writes source: the author's text never
reaches ``eval``. ``CompiledPolicy.source`` shows what was generated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from approval_service.engine.codegen import ExprGen
from approval_service.engine.trace import trace_points
from approval_service.errors import FactsError
from approval_service.policy import ast
from approval_service.policy.functions import FUNCTIONS
from approval_service.policy.model import Define, Policy

_CENT = Decimal("0.01")
PARAM_CACHE_LIMIT = 4096


def _money(value: Any) -> Decimal:
    return Decimal(value).quantize(_CENT, rounding=ROUND_HALF_UP)


_EVAL_ERRORS = (ArithmeticError, ValueError, OverflowError)
_DAY_VALUE = re.compile(r"\bh\d+\b")


class _Unusable:
    """A per-day value whose computation failed: using it raises the original error.

    Per-day values are computed ahead of the decision; the interpreter evaluates an
    expression only when a decision needs it, so an error must surface only then.
    """

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    def _raise(self, *args: Any) -> Any:
        raise self.error

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _raise
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _raise
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __neg__ = _raise
    __bool__ = __hash__ = __getattr__ = __getitem__ = _raise


def _usable(value: Any) -> Any:
    if type(value) is _Unusable:
        raise value.error
    return value


def _guard(reads: frozenset[str]) -> str:
    return " and ".join(f"f_{r} is not None" for r in sorted(reads))


def _safe(gen: ExprGen, node: ast.Node) -> str:
    """Code for a trace point that gives None instead of failing on an absent record."""
    path = ast.path_of(node)
    if path is None or "." not in path:
        return gen.expr(node)
    head, *rest = path.split(".")
    code = gen.local(head, frozenset())
    for part in rest:
        code = f"(None if {code} is None else {code}[{part!r}])"
    return code


def generate(policy: Policy, trace: bool) -> tuple[str, dict[str, Any]]:
    """Python source defining ``decide(facts, today, form)``, and the constants it needs."""
    gen = ExprGen(policy)
    body: list[str] = []
    w = body.append

    def emit(indent: str, line: str) -> None:
        for pre in gen.take_pre():
            w(indent + pre)
        w(indent + line)

    for name in policy.facts:
        w(f"    f_{name} = facts[{name!r}]")
    if policy.form:
        w("    form = form or _EMPTY")
    # consecutive derived values with the same guard share one if/else
    groups: list[tuple[str, list[Define]]] = []
    for define in policy.defines:
        guard = _guard(define.expr.reads)
        if groups and groups[-1][0] == guard:
            groups[-1][1].append(define)
        else:
            groups.append((guard, [define]))
    for guard, defines in groups:
        if not guard:
            for define in defines:
                emit("    ", f"d_{define.name} = {gen.expr(define.expr.node)}")
            continue
        w(f"    if {guard}:")
        for define in defines:
            emit("        ", f"d_{define.name} = {gen.expr(define.expr.node)}")
        w("    else:")
        w("        " + " = ".join(f"d_{d.name}" for d in defines) + " = None")
    w("    _rej = []")
    w("    _ref = []")
    if trace:
        w("    _trace = []")
    open_guard: str | None = None
    for condition in policy.conditions:
        reason = gen.const(condition.reason)
        target = "_rej" if condition.on_fail == "reject" else "_ref"
        test = gen.expr(condition.require.node)
        guard = _guard(condition.require.reads)
        if trace:
            open_guard = None  # each traced condition has its own else branch
        if guard and guard != open_guard:
            w(f"    if {guard}:")
        open_guard = guard or None
        indent = "        " if guard else "    "
        if not trace:
            emit(indent, f"if not {test}:")
            w(f"{indent}    {target}.append({reason})")
            continue
        code = repr(condition.code)
        points = trace_points(condition.require.node, condition.require.source)
        values = ", ".join(f"{text!r}: {_safe(gen, node)}" for text, node in points)
        emit(indent, f"_ok = bool({test})")
        w(f"{indent}if not _ok:")
        w(f"{indent}    {target}.append({reason})")
        emit(
            indent,
            f"_trace.append({{'code': {code}, 'outcome': 'passed' if _ok else 'failed', "
            f"'values': {{{values}}}}})",
        )
        if guard:
            names = ", ".join(repr(r) for r in sorted(condition.require.reads))
            w("    else:")
            w(
                f"        _trace.append({{'code': {code}, 'outcome': 'skipped', "
                f"'absent': [_n for _n in ({names},) if facts[_n] is None], 'values': {{}}}})"
            )
    tail = ", 'trace': _trace" if trace else ""
    w("    if _rej:")
    w(f"        return {{'decision': 'rejected', 'reasons': _rej, 'result': {{}}{tail}}}")
    w("    if _ref:")
    w(f"        return {{'decision': 'referred', 'reasons': _ref, 'result': {{}}{tail}}}")
    fields = []
    for field in policy.result:
        code = gen.expr(field.expr.node)
        if field.expr.type.kind == "money":
            code = (
                f"{code}.quantize(_CENT, _HALF_UP)"
                if ExprGen.is_decimal(field.expr.node)
                else f"_money({code})"
            )
        if _DAY_VALUE.search(code):
            code = f"_usable({code})"
        fields.append(f"{field.name!r}: {code}")
    emit(
        "    ",
        f"return {{'decision': 'approved', 'reasons': [], "
        f"'result': {{{', '.join(fields)}}}{tail}}}",
    )

    per_day = [f"p_{n}" for n in policy.parameters] + [f"h{i}" for i in range(len(gen.day_values))]
    preamble = ["def decide(facts, today, form):"]
    if per_day:
        preamble += [
            "    try:",
            "        _day = _DAYS[today]",
            "    except KeyError:",
            "        _day = _resolve(today)",
            "    " + "".join(f"{v}, " for v in per_day) + "= _day",
        ]
    resolve = ["def _resolve(today):"]
    resolve += [f"    p_{n} = _PARAM_{n}(today)" for n in policy.parameters]
    for i, code in enumerate(gen.day_values):
        # evaluated once per day, but its error only counts where a decision uses it
        resolve += [
            "    try:",
            f"        h{i} = {code}",
            "    except _EVAL_ERRORS as _e:",
            f"        h{i} = _Unusable(_e)",
        ]
    resolve += [
        "    _day = (" + "".join(f"{v}, " for v in per_day) + ")",
        f"    if len(_DAYS) >= {PARAM_CACHE_LIMIT}:",
        "        _DAYS.clear()",
        "    _DAYS[today] = _day",
        "    return _day",
    ]
    source = "\n".join([*resolve, "", *preamble, *body]) + "\n"
    return source, gen.consts


class CompiledPolicy:
    """The compiled backend for one policy: compile once, decide many times."""

    backend = "compiled"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.source, consts = generate(policy, trace=False)
        self.trace_source, trace_consts = generate(policy, trace=True)
        self._decide = self._build(self.source, consts)
        self._decide_trace = self._build(self.trace_source, trace_consts)

    def _build(self, source: str, consts: dict[str, Any]) -> Callable[..., dict[str, Any]]:
        namespace: dict[str, Any] = {
            "_DAYS": {},
            "_Decimal": Decimal,
            "_money": _money,
            "_CENT": _CENT,
            "_HALF_UP": ROUND_HALF_UP,
            "_date": date,
            "_EVAL_ERRORS": _EVAL_ERRORS,
            "_Unusable": _Unusable,
            "_usable": _usable,
            "_EMPTY": {},
            **{f"_fn_{n}": f.impl for n, f in FUNCTIONS.items()},
            **{f"_PARAM_{n}": p.value_on for n, p in self.policy.parameters.items()},
            **consts,
        }
        code = compile(source, f"<policy {self.policy.item} {self.policy.version}>", "exec")
        exec(code, namespace)
        fn: Callable[..., dict[str, Any]] = namespace["decide"]
        return fn

    def decide(
        self,
        facts: Mapping[str, Any],
        today: date,
        form: Mapping[str, Any] | None = None,
        trace: bool = False,
    ) -> dict[str, Any]:
        try:
            return (self._decide_trace if trace else self._decide)(facts, today, form)
        except KeyError as exc:
            raise FactsError(f"{self.policy.item}: fact or field {exc} is missing") from exc
        except (TypeError, AttributeError) as exc:
            raise FactsError(
                f"{self.policy.item}: facts do not have the declared types ({exc})"
            ) from exc
