"""Running cases: a wrong expectation is reported with the field and both values."""

from __future__ import annotations

from pathlib import Path

import pytest

from approval_service.authoring.cases import Case, load_case_text
from approval_service.authoring.run import Deciders, Mismatch, run_case, run_cases
from approval_service.engine.backends import BACKENDS
from approval_service.policy.loader import load_policy_folder
from approval_service.policy.model import Policy

RULES = Path(__file__).resolve().parents[2] / "rules"

TEXT = """\
item: elderly-allowance
defaults:
  as_of: 2026-11-23
  facts:
    person: {{birth_date: 1941-05-01, hukou_region: "341602", status: alive}}
cases:
  - name: 85岁 → 批准
    expect: {expect}
"""


@pytest.fixture(scope="module")
def policies() -> dict[str, Policy]:
    return load_policy_folder(RULES)


def one_case(policies: dict[str, Policy], expect: str) -> Case:
    return load_case_text(TEXT.format(expect=expect), "x.yaml", policies).cases[0]


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize(
    ("expect", "mismatches"),
    [
        ('{decision: approved, result: {monthly_amount: "60.00", band: 80-89}}', []),
        ('{decision: approved, result: {monthly_amount: "60"}}', []),  # compared as money
        (
            '{decision: approved, result: {monthly_amount: "70.00"}}',
            [Mismatch("result.monthly_amount", "70.00", "60.00")],
        ),
        (
            "{decision: approved, result: {payment_start: 2027-01-01}}",
            [Mismatch("result.payment_start", "2027-01-01", "2026-12-01")],
        ),
        (
            "{decision: rejected, reasons: [AGE_BELOW_MIN]}",
            [
                Mismatch("decision", "rejected", "approved"),
                Mismatch("reasons", "[AGE_BELOW_MIN]", "[]"),
            ],
        ),
    ],
    ids=["passes", "money-compared-as-decimal", "wrong-amount", "wrong-date", "wrong-decision"],
)
def test_compare(
    policies: dict[str, Policy], backend: str, expect: str, mismatches: list[Mismatch]
) -> None:
    case = one_case(policies, expect)
    outcome = run_case(case, BACKENDS[backend](policies[case.item]))
    assert list(outcome.mismatches) == mismatches
    assert outcome.passed is (not mismatches)


def test_failure_message_names_case_place_backend_field_and_values(
    policies: dict[str, Policy],
) -> None:
    case = one_case(policies, '{decision: approved, result: {monthly_amount: "70.00"}}')
    outcome = run_case(case, BACKENDS["compiled"](policies[case.item]))
    assert outcome.describe() == (
        "elderly-allowance: 85岁 → 批准 (x.yaml:7) [compiled]\n"
        "  result.monthly_amount: expected 70.00, got 60.00"
    )


def test_wrong_decision_shows_the_actual_reasons(policies: dict[str, Policy]) -> None:
    text = TEXT.format(expect="{decision: approved}").replace(
        "    expect:", "    facts: {person: {status: deceased}}\n    expect:"
    )
    case = load_case_text(text, "x.yaml", policies).cases[0]
    outcome = run_case(case, BACKENDS["interpreted"](policies[case.item]))
    assert [str(m) for m in outcome.mismatches] == [
        "decision: expected approved, got rejected [DECEASED]"
    ]


def test_engine_error_is_an_outcome_not_a_crash(policies: dict[str, Policy]) -> None:
    case = one_case(policies, "{decision: approved}")
    early = Case(**{**case.__dict__, "as_of": case.as_of.replace(year=2019)})
    outcome = run_case(early, BACKENDS["compiled"](policies[case.item]))
    assert not outcome.passed
    assert outcome.error is not None and "ParameterMissingError" in outcome.error


def test_every_backend_is_run_or_reported(policies: dict[str, Policy]) -> None:
    deciders = Deciders.build({"elderly-allowance": policies["elderly-allowance"]}, BACKENDS)
    assert deciders.broken == {}
    case = one_case(policies, "{decision: approved}")
    outcomes = run_cases([case], deciders)
    assert [o.backend for o in outcomes] == list(BACKENDS)
    assert all(o.passed for o in outcomes)
