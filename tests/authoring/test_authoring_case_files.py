"""Reading author case files: what is accepted, and what is refused with file:line and a fix."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from approval_service.authoring.cases import CaseFileProblem, load_case_text
from approval_service.policy.loader import load_policy_folder
from approval_service.policy.model import Policy

RULES = Path(__file__).resolve().parents[2] / "rules"

TEMPLATE = """\
item: elderly-allowance
defaults:
  as_of: 2026-11-23
  facts:
    person: {{birth_date: 1941-05-01, hukou_region: "341602", status: alive}}
cases:
  - name: 一
    facts: {facts}
    expect: {expect}
"""


@pytest.fixture(scope="module")
def policies() -> dict[str, Policy]:
    return load_policy_folder(RULES)


def case_text(facts: str = "{}", expect: str = "{decision: approved}") -> str:
    return TEMPLATE.format(facts=facts, expect=expect)


@pytest.mark.parametrize(
    ("facts", "path", "value"),
    [
        (
            '{allowances: [{status: active, monthly_amount: "60.00"}]}',
            ("allowances", 0, "monthly_amount"),
            Decimal("60.00"),
        ),
        (
            "{allowances: [{status: active, monthly_amount: 60}]}",
            ("allowances", 0, "monthly_amount"),
            Decimal(60),
        ),
        ('{person: {birth_date: "1941-05-02"}}', ("person", "birth_date"), date(1941, 5, 2)),
        ("{person: {name: 张三}}", ("person", "name"), "张三"),
        ("{person: {name: 张三}}", ("person", "hukou_region"), "341602"),  # merged with defaults
        ("{person: null}", ("person",), None),
        ("{}", ("low_income",), []),
        ("{}", ("person", "death_date"), None),
        ("{allowances: [{status: active}]}", ("allowances", 0, "start_date"), "missing"),
        ("{retired_on: 2025-03-01}", ("retired_on",), date(2025, 3, 1)),
    ],
    ids=[
        "money-string",
        "money-int",
        "date-iso-string",
        "undeclared-catalogue-field-kept",
        "record-merged-with-defaults",
        "absent-record",
        "list-defaults-empty",
        "nullable-field-defaults-null",
        "non-null-field-not-read-may-be-left-out",
        "catalogue-scalar-fact",
    ],
)
def test_accepted(
    policies: dict[str, Policy], facts: str, path: tuple[Any, ...], value: Any
) -> None:
    case = load_case_text(case_text(facts), "cases.yaml", policies).cases[0]
    got: Any = case.facts
    for step in path:
        if isinstance(got, dict) and step not in got:
            got = "missing"
            break
        got = got[step]
    assert got == value
    assert type(got) is type(value)


def test_expectation_and_as_of(policies: dict[str, Policy]) -> None:
    text = case_text(
        expect='{decision: approved, reasons: [], result: {monthly_amount: "60.00", '
        "payment_start: 2026-12-01, band: 80-89}}"
    ).replace("    facts: {}", "    as_of: 2025-02-03\n    facts: {}")
    case = load_case_text(text, "cases.yaml", policies).cases[0]
    assert case.as_of == date(2025, 2, 3)
    assert case.line == 7 and case.where == "cases.yaml:7"
    assert case.expect.reasons == ()
    assert case.expect.result == {
        "monthly_amount": Decimal("60.00"),
        "payment_start": date(2026, 12, 1),
        "band": "80-89",
    }


REJECTED = [
    # (id, text, line, words the message must contain)
    (
        "duplicate-key",
        case_text("{person: {birth_date: 1941-05-01, birth_date: 1941-05-02}}"),
        8,
        ["duplicate key `birth_date`", "remove one"],
    ),
    (
        "unknown-fact",
        case_text("{persn: null}"),
        8,
        ["unknown fact `persn`", "did you mean `person`"],
    ),
    (
        "unknown-field",
        case_text("{person: {birth_dat: 1941-05-01}}"),
        8,
        ["no field `birth_dat`", "did you mean `birth_date`"],
    ),
    (
        "float-money",
        case_text("{allowances: [{status: active, monthly_amount: 60.5}]}"),
        8,
        ["binary float", '"60.50"'],
    ),
    (
        "impossible-date",
        case_text("{person: {birth_date: 1941-02-30}}"),
        8,
        ["not a real calendar date"],
    ),
    ("not-a-date", case_text('{person: {birth_date: "May 1"}}'), 8, ["YYYY-MM-DD"]),
    ("timestamp", case_text("{person: {birth_date: 1941-05-01 10:00:00}}"), 8, ["time of day"]),
    (
        "text-read-as-number",
        case_text("{person: {hukou_region: 341602}}"),
        8,
        ["not text", 'double quotes: "341602"'],
    ),
    ("bool-for-int", case_text("{fund: {continuous_months: yes}}"), 8, ["not a whole number"]),
    ("list-not-a-list", case_text("{allowances: {status: active}}"), 8, ["list of records"]),
    (
        "required-field-missing",
        case_text("{low_income: [{category: dibao}]}"),
        8,
        ["has no `since`", "which the policy reads"],
    ),
    (
        "unknown-decision",
        case_text(expect="{decision: approve}"),
        9,
        ["decision `approve`", "did you mean `approved`"],
    ),
    (
        "unknown-reason",
        case_text(expect="{decision: rejected, reasons: [AGE_BELOW]}"),
        9,
        ["no reason code `AGE_BELOW`", "did you mean `AGE_BELOW_MIN`"],
    ),
    (
        "result-when-rejected",
        case_text(expect="{decision: rejected, result: {band: 80-89}}"),
        9,
        ["a rejected application has no result"],
    ),
    (
        "unknown-result-field",
        case_text(expect="{decision: approved, result: {amount: 1}}"),
        9,
        ["unknown key `amount` in result"],
    ),
    (
        "result-float-money",
        case_text(expect="{decision: approved, result: {monthly_amount: 60.0}}"),
        9,
        ["binary float"],
    ),
    (
        "unknown-case-key",
        case_text().replace("    facts:", "    fact:"),
        8,
        ["unknown key `fact`", "did you mean `facts`"],
    ),
    (
        "no-expect",
        case_text().replace("    expect: {decision: approved}\n", ""),
        7,
        ["has no `expect`"],
    ),
    (
        "unknown-item",
        case_text().replace("item: elderly-allowance", "item: elderly-alowance"),
        1,
        ["no policy has item `elderly-alowance`", "did you mean `elderly-allowance`"],
    ),
    (
        "unknown-form-field",
        case_text().replace("    facts: {}", "    form: {address: x}"),
        8,
        ["no form field `address`", "remove `form:`"],
    ),
    (
        "duplicate-case-name",
        case_text() + "  - name: 一\n    expect: {decision: approved}\n",
        10,
        ["case name `一` is also used at line 7"],
    ),
    ("yaml-syntax", case_text("{person: {birth_date: 1941-05-01}"), 9, ["YAML"]),
    ("no-as-of", case_text().replace("  as_of: 2026-11-23\n", ""), 6, ["no `as_of`"]),
]


@pytest.mark.parametrize(
    ("text", "line", "words"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED]
)
def test_rejected(policies: dict[str, Policy], text: str, line: int, words: list[str]) -> None:
    with pytest.raises(CaseFileProblem) as caught:
        load_case_text(text, "rules/cases/x.yaml", policies)
    message = str(caught.value)
    assert message.startswith(f"rules/cases/x.yaml:{line}:"), message
    for word in words:
        assert word in message
