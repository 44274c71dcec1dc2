"""``miaopi rules test|lint|show`` and ``miaopi bench engine`` through the real Typer app."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from approval_service.cli.main import app
from approval_service.engine.backends import BACKENDS

RULES = Path(__file__).resolve().parents[2] / "rules"

runner = CliRunner()

WRONG_CASE = """\
item: elderly-allowance
defaults:
  as_of: 2026-11-23
  facts:
    person: {birth_date: 1941-05-01, hukou_region: "341602", status: alive}
cases:
  - name: 85岁 → 批准
    expect: {decision: approved, result: {monthly_amount: "70.00"}}
  - name: 查无此人 → 转人工
    facts: {person: null}
    expect: {decision: referred, reasons: [PERSON_NOT_FOUND]}
"""


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


@pytest.fixture
def rules_copy(tmp_path: Path) -> Path:
    """A rules folder with elderly-allowance alone, and its cases."""
    folder = tmp_path / "rules"
    (folder / "cases").mkdir(parents=True)
    shutil.copy(RULES / "elderly-allowance.yaml", folder)
    shutil.copy(RULES / "cases" / "elderly-allowance.yaml", folder / "cases")
    return folder


def test_help_lists_the_command_groups() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("rules", "bench", "data"):
        assert name in result.output


def test_rules_test_passes_on_the_real_rules_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIAOPI_RULES_DIR", str(RULES))
    result = runner.invoke(app, ["rules", "test"])
    assert result.exit_code == 0, result.output
    assert "backends: " + ", ".join(BACKENDS) in result.output
    assert last_line(result.output).endswith(" passed, 0 failed")


def test_rules_test_failure_names_case_place_backend_field_and_values(tmp_path: Path) -> None:
    cases = tmp_path / "elderly-allowance.yaml"
    cases.write_text(WRONG_CASE, encoding="utf-8")
    result = runner.invoke(
        app,
        [
            "rules",
            "test",
            str(cases),
            "--rules-dir",
            str(RULES),
            "-b",
            "compiled",
            "-b",
            "interpreted",
        ],
    )
    assert result.exit_code == 1
    out = result.output
    assert f"FAILED 85岁 → 批准  {cases}:7  [compiled, interpreted]" in out
    assert "result.monthly_amount: expected 70.00, got 60.00" in out
    assert "✗ elderly-allowance  1 passed, 1 failed" in out
    assert last_line(out) == "1 passed, 1 failed"


def test_rules_test_reports_a_bad_case_file_with_file_and_line(tmp_path: Path) -> None:
    cases = tmp_path / "elderly-allowance.yaml"
    cases.write_text(WRONG_CASE.replace("{person: null}", "{persn: null}"), encoding="utf-8")
    result = runner.invoke(app, ["rules", "test", str(tmp_path), "--rules-dir", str(RULES)])
    assert result.exit_code == 1
    assert f"ERROR {cases}:10:13: unknown fact `persn` (did you mean `person`?)" in result.output
    assert last_line(result.output) == "0 passed, 0 failed, 1 error"


def test_rules_test_unknown_backend_is_a_usage_error() -> None:
    result = runner.invoke(app, ["rules", "test", "--rules-dir", str(RULES), "-b", "compild"])
    assert result.exit_code == 2
    assert "unknown backend 'compild'" in result.output


def test_policy_errors_are_messages_without_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["rules", "test", "--rules-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "error:" in result.output and "no such folder of policy files" in result.output
    assert "Traceback" not in result.output


def test_lint_passes_on_a_complete_folder(rules_copy: Path) -> None:
    result = runner.invoke(app, ["rules", "lint", str(rules_copy)])
    assert result.exit_code == 0, result.output
    assert last_line(result.output).startswith("1 policies, ")
    assert last_line(result.output).endswith(" cases, 0 errors")


def test_lint_broken_policy_exits_1_with_file_line_column(rules_copy: Path) -> None:
    policy = rules_copy / "elderly-allowance.yaml"
    text = policy.read_text(encoding="utf-8")
    policy.write_text(text.replace("age >= min_age", "age >= min_ag"), encoding="utf-8")
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "age >= min_age" in row)
    result = runner.invoke(app, ["rules", "lint", str(rules_copy)])
    assert result.exit_code == 1
    assert f"{policy}:{line}:" in result.output
    assert "min_ag" in result.output and "did you mean `min_age`?" in result.output


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "      birth_date: date\n",
            "      birth_date: date\n      name: int\n",
            "`person.name` is declared int, the registries provide text (declare it text)",
        ),
        (
            "      birth_date: date\n",
            "      birth_date: date\n      nickname: text\n",
            "the registries have no field `person.nickname`",
        ),
        (
            "facts:\n",
            "facts:\n  retired_on: date\n",
            "fact `retired_on` is declared as date, "
            "the registries provide date? (declare it as `retired_on: date?`)",
        ),
    ],
    ids=["field-type", "unknown-field", "shape"],
)
def test_lint_checks_facts_against_the_registry_catalogue(
    rules_copy: Path, old: str, new: str, message: str
) -> None:
    policy = rules_copy / "elderly-allowance.yaml"
    text = policy.read_text(encoding="utf-8")
    assert old in text
    policy.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = runner.invoke(app, ["rules", "lint", str(rules_copy)])
    assert result.exit_code == 1
    assert f"error {policy}:" in result.output
    assert message in result.output


def test_lint_wants_cases_for_every_policy_and_reason_code(rules_copy: Path) -> None:
    shutil.copy(RULES / "senior-card-new.yaml", rules_copy)
    cases = rules_copy / "cases" / "elderly-allowance.yaml"
    cases.write_text(WRONG_CASE.replace("2026-11-23", "2019-06-01"), encoding="utf-8")
    result = runner.invoke(app, ["rules", "lint", str(rules_copy)])
    assert result.exit_code == 1
    out = result.output
    assert "`senior-card-new` has no test cases" in out
    assert "reason code `AGE_BELOW_MIN` is not expected by any case" in out
    assert "reason code `PERSON_NOT_FOUND` is not expected" not in out
    assert "parameter `min_age` has no value before 2020-01-01" in out


def test_show_prints_the_chinese_summary() -> None:
    result = runner.invoke(app, ["rules", "show", "elderly-allowance", "--rules-dir", str(RULES)])
    assert result.exit_code == 0, result.output
    out = result.output
    for text in (
        "事项名称：80周岁以上高龄津贴申领（elderly-allowance）",
        "部门：民政局",
        "版本：",
        "依据：",
        "参数：",
        "    2025-01-01 起：60.00",
        "读取的数据：",
        "办理条件",
        "AGE_BELOW_MIN　不满足时：驳回",
        "PERSON_NOT_FOUND　不满足时：转人工",
        "要求：age >= min_age",
        "办理结果：",
        "payment_start = next_month_start(today)",
    ):
        assert text in out


def test_show_unknown_item_suggests_the_nearest() -> None:
    result = runner.invoke(app, ["rules", "show", "elderly-alowance", "--rules-dir", str(RULES)])
    assert result.exit_code == 1
    assert "did you mean `elderly-allowance`?" in result.output


def test_bench_engine_json_has_every_policy_and_backend() -> None:
    result = runner.invoke(
        app, ["bench", "engine", "--json", "--seconds", "0.05", "--rules-dir", str(RULES)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    items = sorted(p.stem for p in RULES.glob("*.yaml"))
    assert sorted(report["policies"]) == items
    for rates in report["policies"].values():
        assert set(rates) == {"compiled", "durable", "interpreted"}
        assert all(isinstance(r, float) and r > 0 for r in rates.values())
    assert set(report["ratio_compiled_over_durable"]) == set(items)
    assert report["python"]


def test_bench_engine_table_shows_every_backend_and_the_ratio(rules_copy: Path) -> None:
    result = runner.invoke(
        app, ["bench", "engine", "--seconds", "0.02", "--rules-dir", str(rules_copy)]
    )
    assert result.exit_code == 0, result.output
    for text in ("elderly-allowance", *BACKENDS, "compiled ÷ durable", "×"):
        assert text in result.output
