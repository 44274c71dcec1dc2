"""The three backends (compiled, interpreted, durable) agree on every policy in rules/.

Fact bundles are generated from each policy's declared facts and their types,
with values drawn mostly from pools near the thresholds that matter (ages
around 60/70/80/90/100 and retirement ages, birthdays on and around the
business date and 29 February, business dates around the 2025-01-01 parameter
changes and year ends, balances 0.00/0.01/large, 2-4 months, dates around
D-3 months, D+90 days and D-365 days, retirement birth months around
2025-01, every text literal the policy mentions, absent records and values,
empty and non-empty lists), so that it works for any policy file, including
new ones. The same generator runs under hypothesis and, for the sanity test
that every decision is reached, from a seeded ``random.Random``.
"""

from __future__ import annotations

import calendar
import random
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approval_service.engine.compiled import CompiledPolicy
from approval_service.engine.durable import DurablePolicy
from approval_service.engine.interpreter import InterpretedPolicy
from approval_service.policy import ast
from approval_service.policy.dates import add_months, add_years
from approval_service.policy.loader import load_policy_folder
from approval_service.policy.model import Policy
from approval_service.policy.types import Type

RULES = Path(__file__).resolve().parents[2] / "rules"
POLICIES: dict[str, Policy] = load_policy_folder(RULES)
ITEMS = sorted(POLICIES)
T = TypeVar("T")

AGES: tuple[int, ...] = (
    0,
    1,
    18,
    45,
    49,
    50,
    51,
    54,
    55,
    56,
    58,
    59,
    60,
    61,
    62,
    63,
    64,
    69,
    70,
    71,
)
AGES += (79, 80, 81, 89, 90, 91, 99, 100, 101)
DAY_OFFSETS: tuple[int, ...] = (
    0,
    1,
    -1,
    2,
    -2,
    30,
    -30,
    89,
    90,
    91,
    -89,
    -90,
    -91,
    364,
    365,
    366,
    -364,
    -365,
)
DAY_OFFSETS += (-366, -367, 1826, 1827, -1826)
MONTH_OFFSETS = (-60, -36, -13, -12, -4, -3, -2, -1, 1, 2, 3, 4, 12, 36, 60)
TODAYS = tuple(
    date.fromisoformat(d)
    for d in (
        "2019-12-31",  # before the first effective date of some parameters
        "2020-01-01",
        "2023-12-31",
        "2024-01-01",
        "2024-02-28",
        "2024-02-29",
        "2024-03-01",
        "2024-12-31",
        "2025-01-01",
        "2025-01-02",
        "2025-01-31",
        "2025-02-01",
        "2025-02-28",
        "2025-03-01",
        "2025-12-31",
        "2026-01-01",
        "2026-11-23",
        "2026-11-30",
        "2027-02-28",
        "2028-02-29",
    )
)
TEXTS: tuple[str, ...] = (
    "",
    "3",
    "34",
    "341",
    "3416",
    "341602",
    "341621",
    "3417",
    "340100",
    "3501",
    "110101",
)
TEXTS += ("x3416", "中文", 'a"b', "3416\n", "alive", "normal", "sealed", "expired", "renewed")


class Chooser:
    """Where the generator's choices come from: hypothesis or a seeded Random."""

    def choice(self, options: Sequence[T]) -> T:
        raise NotImplementedError

    def integer(self, low: int, high: int) -> int:
        raise NotImplementedError

    def chance(self, percent: int) -> bool:
        return self.integer(1, 100) <= percent


class Drawing(Chooser):
    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self.draw = draw

    def choice(self, options: Sequence[T]) -> T:
        value: T = self.draw(st.sampled_from(options))
        return value

    def integer(self, low: int, high: int) -> int:
        value: int = self.draw(st.integers(low, high))
        return value


class Seeded(Chooser):
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def choice(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)


def _literals(policy: Policy) -> tuple[set[str], set[int], set[Decimal]]:
    """Text, int and money literals of every expression in the policy."""
    texts: set[str] = set(policy.deployment.values())
    ints: set[int] = set()
    money: set[Decimal] = set()

    def walk(node: ast.Node) -> None:
        if isinstance(node, ast.Literal):
            value = node.value
            if isinstance(value, str):
                texts.add(value)
            elif isinstance(value, int) and not isinstance(value, bool):
                ints.add(value)
            elif isinstance(value, Decimal):
                money.add(value)
        for child in ast.children(node):
            walk(child)

    exprs = [c.require for c in policy.conditions] + [d.expr for d in policy.defines]
    for expr in exprs + [r.expr for r in policy.result]:
        walk(expr.node)
    for parameter in policy.parameters.values():
        for value in parameter.values:
            if isinstance(value, str):
                texts.add(value)
            elif isinstance(value, int):
                ints.add(value)
            elif isinstance(value, Decimal):
                money.add(value)
    return texts, ints, money


def _field_texts(policy: Policy) -> dict[tuple[str, str], set[str]]:
    """(fact, field) -> the texts the policy compares that field with (prefixes extended)."""
    out: dict[tuple[str, str], set[str]] = {}

    def key(node: ast.Node, scope: dict[str, str]) -> tuple[str, str] | None:
        path = ast.path_of(node)
        if path is None or "." not in path:
            return None
        head, field = path.split(".", 1)
        return scope.get(head, head), field

    def const(node: ast.Node) -> str | None:
        if isinstance(node, ast.Literal) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name) and node.ident in policy.deployment:
            return policy.deployment[node.ident] + "02"
        return None

    def walk(node: ast.Node, scope: dict[str, str]) -> None:
        pairs: list[tuple[ast.Node, ast.Node]] = []
        if isinstance(node, ast.Binary) and node.op in ("==", "!="):
            pairs = [(node.left, node.right), (node.right, node.left)]
        if isinstance(node, ast.Call) and node.func == "starts_with":
            pairs = [(node.args[0], node.args[1])]
        for a, b in pairs:
            k, text = key(a, scope), const(b)
            if k is not None and text is not None:
                out.setdefault(k, set()).add(text)
        if isinstance(node, ast.Aggregate):
            source = ast.path_of(node.source)
            scope = {**scope, node.var: source or node.var}
        for child in ast.children(node):
            walk(child, scope)

    for expr in [c.require for c in policy.conditions] + [d.expr for d in policy.defines]:
        walk(expr.node, {})
    return out


class Pools:
    """Value pools for one policy and business date."""

    def __init__(self, policy: Policy, today: date) -> None:
        texts, ints, money = _literals(policy)
        prefixes = set(policy.deployment.values())
        self.policy_texts = sorted(texts | {p + "02" for p in prefixes} | {"341602"})
        self.field_texts = {k: sorted(v | {"other"}) for k, v in _field_texts(policy).items()}
        self.texts = sorted(texts | set(TEXTS))
        self.ints = sorted({v + d for v in ints | {0, 1, 2, 3, 4, 12} for d in (-1, 0, 1)})
        cents = Decimal("0.01")
        amounts = {Decimal(0), cents, cents * 2, Decimal("99999999.99"), Decimal("1E13")}
        amounts |= {Decimal("0.00001"), Decimal("1234.56")}
        for value in money:
            amounts |= {value - cents, value, value + cents}
            amounts |= {3 * value - cents, 3 * value, 3 * value + cents}
        self.money = sorted(amounts)
        self.dates = sorted(_date_pool(today))
        self.near_dates = sorted(
            {today + timedelta(days=d) for d in DAY_OFFSETS}
            | {add_months(today, n) for n in MONTH_OFFSETS}
        )


_POOLS: dict[tuple[str, date], Pools] = {}


def _pools(policy: Policy, today: date) -> Pools:
    key = (policy.sha256, today)
    if key not in _POOLS:
        if len(_POOLS) > 2000:
            _POOLS.clear()
        _POOLS[key] = Pools(policy, today)
    return _POOLS[key]


def _near(day: date) -> list[date]:
    return [day - timedelta(days=1), day, day + timedelta(days=1)]


def _date_pool(today: date) -> set[date]:
    pool: set[date] = set()
    for years in AGES:
        pool.update(_near(add_years(today, -years)))
    for months in MONTH_OFFSETS:
        pool.update(_near(add_months(today, months)))
    for days in DAY_OFFSETS:
        pool.add(today + timedelta(days=days))
    for year in range(today.year - 101, today.year + 6):
        if calendar.isleap(year):
            pool.update((date(year, 2, 28), date(year, 2, 29), date(year, 3, 1)))
    # birth months around the 2025-01 retirement reform, and the handbook's vectors
    for year in (1964, 1965, 1969, 1970, 1974, 1975):
        for month in (1, 2, 11, 12):
            pool.update((date(year, month, 1), date(year, month, 15)))
    for text in ("1963-12-31", "1965-12-01", "1971-04-30", "1995-12-01"):
        pool.add(date.fromisoformat(text))
    # the whole reform window, month by month, relative to today
    for months in range(0, 61, 1):
        for years in (50, 55, 60):
            pool.add(add_months(today, -(12 * years + months)).replace(day=1))
    return pool


def scalar(kind: str, pools: Pools, ch: Chooser, where: tuple[str, str] = ("", "")) -> Any:
    if kind == "bool":
        return ch.chance(50)
    if kind == "int":
        return ch.choice(pools.ints) if ch.chance(85) else ch.integer(-3, 400)
    if kind == "money":
        if ch.chance(80):
            return ch.choice(pools.money)
        return Decimal(ch.integer(0, 10**9)) / 100
    if kind == "date":
        if ch.chance(50):
            return ch.choice(pools.near_dates)
        if ch.chance(85):
            return ch.choice(pools.dates)
        return date.fromordinal(
            ch.integer(date(1900, 1, 1).toordinal(), date(2100, 1, 1).toordinal())
        )
    if kind == "text":
        if where in pools.field_texts and ch.chance(75):
            return ch.choice(pools.field_texts[where])
        return ch.choice(pools.policy_texts if ch.chance(50) else pools.texts)
    raise AssertionError(f"no generator for {kind}")


def value_of(typ: Type, pools: Pools, ch: Chooser, where: tuple[str, str] = ("", "")) -> Any:
    """A value of ``typ``; ``where`` is (fact, field) for text pools."""
    if typ.nullable and ch.chance(30 if typ.kind == "record" else 25):
        return None
    if typ.kind == "record":
        return {name: value_of(field, pools, ch, (typ.name, name)) for name, field in typ.fields}
    if typ.kind == "list":
        assert typ.item is not None
        size = ch.choice((0, 0, 1, 1, 2, 3, 4))
        if size > 1 and ch.chance(40):  # repeats, like two cards lost in one year
            first = value_of(typ.item, pools, ch)
            return [first] * (size - 1) + [value_of(typ.item, pools, ch)]
        return [value_of(typ.item, pools, ch) for _ in range(size)]
    return scalar(typ.kind, pools, ch, where)


def bundle(policy: Policy, ch: Chooser) -> tuple[dict[str, Any], date, dict[str, Any] | None]:
    """(facts, business date, form) for one application of ``policy``."""
    if ch.chance(70):
        today = ch.choice(TODAYS)
    else:
        today = date.fromordinal(
            ch.integer(date(2020, 1, 1).toordinal(), date(2035, 12, 31).toordinal())
        )
    pools = _pools(policy, today)
    facts = {name: value_of(decl.type, pools, ch) for name, decl in policy.facts.items()}
    form = None
    if policy.form:
        form = {name: ch.choice(("", "安徽省亳州市谯城区某路1号", "x")) for name in policy.form}
        if ch.chance(10):
            form = {}
    return facts, today, form


DECIDERS = {
    item: (CompiledPolicy(p), InterpretedPolicy(p), DurablePolicy(p))
    for item, p in POLICIES.items()
}


def outcome(decider: Any, facts: Any, today: date, form: Any, trace: bool) -> Any:
    try:
        return canonical(decider.decide(facts, today, form, trace=trace))
    except Exception as exc:  # every backend must fail the same way
        return ("raises", type(exc).__name__)


def canonical(value: Any) -> Any:
    """Equal values with their types and key order (Decimal("1.0") is not "1.00")."""
    if isinstance(value, dict):
        return [(k, canonical(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, Decimal | date | bool):
        return (type(value).__name__, str(value))
    return value


def agree(item: str, facts: Any, today: date, form: Any) -> None:
    for trace in (False, True):
        compiled, interpreted, durable = (
            outcome(d, facts, today, form, trace) for d in DECIDERS[item]
        )
        context = f"{item} on {today} trace={trace}\nfacts={facts!r}\nform={form!r}"
        assert compiled == interpreted, f"compiled != interpreted for {context}"
        assert durable == interpreted, f"durable != interpreted for {context}"


@st.composite
def bundles(draw: Callable[[st.SearchStrategy[Any]], Any], item: str) -> Any:
    return bundle(POLICIES[item], Drawing(draw))


@pytest.mark.parametrize("item", ITEMS)
@settings(
    max_examples=max(300, 7000 // max(len(ITEMS), 1)),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_backends_agree(item: str, data: st.DataObject) -> None:
    facts, today, form = data.draw(bundles(item))
    agree(item, facts, today, form)


@pytest.mark.parametrize("item", ITEMS)
def test_seeded_bundles_agree_and_reach_every_decision(item: str) -> None:
    """Not vacuous: the generator reaches approved, rejected and referred for every policy."""
    policy = POLICIES[item]
    compiled = DECIDERS[item][0]
    seen: dict[str, int] = {}
    codes: set[str] = set()
    ch = Seeded(20261123)
    for n in range(3000):
        facts, today, form = bundle(policy, ch)
        if n < 300:
            agree(item, facts, today, form)
        try:
            doc = compiled.decide(facts, today, form, trace=True)
        except Exception as exc:
            seen[type(exc).__name__] = seen.get(type(exc).__name__, 0) + 1
            continue
        seen[doc["decision"]] = seen.get(doc["decision"], 0) + 1
        codes.update(e["code"] for e in doc["trace"] if e["outcome"] == "failed")
    for decision in ("approved", "rejected", "referred"):
        assert seen.get(decision, 0) >= 10, seen
    assert codes == {c.code for c in policy.conditions}, "never failed: " + ", ".join(
        sorted({c.code for c in policy.conditions} - codes)
    )


EAGER_POLICY = """\
item: eager
name: 测试
department: 测试
version: "1"
basis: 测试
facts:
  person:
    optional: true
    fields: {status: text}
conditions:
  - code: DECEASED
    require: person.status != "deceased"
    on_fail: reject
    message: m
    basis: b
result:
  renew_on: add_years(today, 1)
"""


def test_a_per_day_value_that_fails_only_matters_where_a_decision_uses_it() -> None:
    """Regression: the compiled backend computes per-day values ahead of deciding."""
    from approval_service.policy.loader import load_policy_text

    policy = load_policy_text(EAGER_POLICY, "eager.yaml")
    facts = {"person": {"status": "deceased"}}
    today = date(9999, 6, 1)
    expected = InterpretedPolicy(policy).decide(facts, today)
    assert expected["decision"] == "rejected"
    assert DurablePolicy(policy).decide(facts, today) == expected
    assert CompiledPolicy(policy).decide(facts, today) == expected
    alive = {"person": {"status": "alive"}}
    for backend in (InterpretedPolicy(policy), CompiledPolicy(policy)):
        with pytest.raises(ValueError):
            backend.decide(alive, today)  # approved: the result needs the value
