"""The compiled backend against expected values and against the interpreter."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from approval_service.engine.compiled import CompiledPolicy
from approval_service.engine.interpreter import InterpretedPolicy
from approval_service.errors import FactsError
from approval_service.policy.loader import load_policy_text

POLICY = """\
item: calc
name: 计算
department: 测试
version: "1"
basis: 测试
parameters:
  limit:
    label: 限额
    type: money
    values:
      2020-01-01: "600.00"
      2025-01-01: "800.00"
facts:
  person:
    optional: true
    fields: {{birth_date: date, last_seen_date: "date?"}}
  cards:
    list: true
    fields: {{status: text, expires_on: date, cancelled_on: "date?"}}
  fund:
    optional: true
    fields: {{balance: money, months: int}}
define:
  latest: max(c.expires_on for c in cards)
conditions:
  - code: HAS_PERSON
    require: person is present
    on_fail: refer
    message: m
    basis: b
  - code: HAS_FUND
    require: fund is present
    on_fail: reject
    message: m
    basis: b
result:
  value: {expr}
"""

FACTS: dict[str, Any] = {
    "person": {"birth_date": date(1944, 2, 29), "last_seen_date": None},
    "cards": [
        {"status": "valid", "expires_on": date(2027, 5, 1), "cancelled_on": None},
        {"status": "cancelled", "expires_on": date(2026, 1, 1), "cancelled_on": date(2026, 3, 1)},
        {"status": "cancelled", "expires_on": date(2025, 1, 1), "cancelled_on": date(2025, 11, 22)},
    ],
    "fund": {"balance": Decimal("1000.555"), "months": 7},
}
TODAY = date(2026, 11, 23)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("age_on(person.birth_date, today)", 82),
        ('age_on(person.birth_date, date("2025-02-28"))', 80),
        ('age_on(person.birth_date, date("2025-03-01"))', 81),
        ("min(fund.balance, 3 * limit)", Decimal("1000.56")),
        ("fund.balance / 3", Decimal("333.52")),
        ("fund.months // 2", 3),
        ("-fund.months + 1", -6),
        ('count(c in cards where c.status == "cancelled")', 2),
        (
            "count(c in cards where c.cancelled_on is present"
            " and c.cancelled_on >= add_days(today, -365))",
            1,
        ),
        ("any(c in cards)", True),
        ('all(c in cards where c.status == "valid")', False),
        ('none(c in cards where c.status == "lost")', True),
        ("latest", date(2027, 5, 1)),
        ('min(c.expires_on for c in cards where c.status == "cancelled")', date(2025, 1, 1)),
        ("sum(fund.balance for c in cards)", Decimal("3001.67")),
        ('add_months(date("2026-11-30"), 3)', date(2027, 2, 28)),
        ("next_month_start(today)", date(2026, 12, 1)),
        ('months_between(date("2025-01-01"), today)', 22),
        ('days_between(today, date("2026-12-01"))', 8),
        ("if person.last_seen_date is present then person.last_seen_date else today", TODAY),
        ("person.last_seen_date is absent or person.last_seen_date > today", True),
        ('starts_with("341602", "3416") and "a" in ["a", "b"] and "c" not in ["a"]', True),
        ("if fund.months > 6 then 1 else 0.50", Decimal("1.00")),
        ("3 * limit", Decimal("2400.00")),
        ("add_years(month_start(person.birth_date), 5)", date(1949, 2, 1)),
        ("add_months(next_month_start(today), -11)", date(2026, 1, 1)),
        ("add_months(month_start(person.birth_date), 12 * 81 - 1)", date(2025, 1, 1)),
        ("add_months(person.birth_date, 12)", date(1945, 2, 28)),
        ("months_between(person.birth_date, today)", 993),
        ("min(3, fund.months)", 3),
        ("max(fund.balance, 2000.00)", Decimal("2000.00")),
        ("any(c in cards where c.expires_on > today and fund.months > 6)", True),
    ],
)
def test_expression_values_agree(expr: str, expected: object) -> None:
    policy = load_policy_text(POLICY.format(expr=expr.replace("'", "''").join("''")), "calc.yaml")
    compiled = CompiledPolicy(policy).decide(FACTS, TODAY)
    interpreted = InterpretedPolicy(policy).decide(FACTS, TODAY)
    assert compiled == interpreted
    assert compiled["decision"] == "approved"
    value = compiled["result"]["value"]
    assert value == expected and type(value) is type(expected)


def test_parameter_picked_by_business_date() -> None:
    policy = load_policy_text(POLICY.format(expr="3 * limit"), "calc.yaml")
    decider = CompiledPolicy(policy)
    assert decider.decide(FACTS, date(2024, 12, 31))["result"]["value"] == Decimal("1800.00")
    assert decider.decide(FACTS, date(2025, 1, 1))["result"]["value"] == Decimal("2400.00")


def test_reject_beats_refer_and_absent_records_skip() -> None:
    policy = load_policy_text(POLICY.format(expr="fund.months"), "calc.yaml")
    decider = CompiledPolicy(policy)
    doc = decider.decide({**FACTS, "person": None, "fund": None}, TODAY, trace=True)
    assert doc["decision"] == "rejected"
    assert [r["code"] for r in doc["reasons"]] == ["HAS_FUND"]
    assert [t["outcome"] for t in doc["trace"]] == ["failed", "failed"]
    referred = decider.decide({**FACTS, "person": None}, TODAY)
    assert referred == {
        "decision": "referred",
        "reasons": [policy.conditions[0].reason],
        "result": {},
    }


def test_missing_fact_is_a_facts_error() -> None:
    policy = load_policy_text(POLICY.format(expr="fund.months"), "calc.yaml")
    with pytest.raises(FactsError, match="'fund'"):
        CompiledPolicy(policy).decide({"person": None, "cards": []}, TODAY)


def test_generated_source_is_visible_and_has_no_author_text_outside_constants() -> None:
    policy = load_policy_text(POLICY.format(expr="fund.months"), "calc.yaml")
    decider = CompiledPolicy(policy)
    assert decider.source.startswith("def _resolve(today):")
    assert "def decide(facts, today, form):" in decider.source
