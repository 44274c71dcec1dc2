"""Strict loading: structure errors carry file, line and a suggestion; folders load whole."""

from __future__ import annotations

import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from approval_service.errors import (
    ParameterMissingError,
    PolicyDefinitionError,
    PolicyError,
    PolicyFolderError,
    PolicySyntaxError,
)
from approval_service.policy.loader import load_policy_folder, load_policy_text

from .conftest import BASE

RULES = Path(__file__).resolve().parents[2] / "rules"
GOOD = BASE.format(require="person is present")


def test_good_policy_loads_with_typed_parameters() -> None:
    policy = load_policy_text(GOOD, "p.yaml")
    assert policy.parameters["min_age"].value_on(date(2024, 12, 31)) == 80
    assert policy.parameters["min_age"].value_on(date(2025, 1, 1)) == 81
    assert policy.parameters["limit"].value_on(date(2030, 1, 1)) == Decimal("600.00")
    with pytest.raises(ParameterMissingError, match="no value in force on 2019-12-31"):
        policy.parameters["min_age"].value_on(date(2019, 12, 31))
    assert len(policy.sha256) == 64


@pytest.mark.parametrize(
    ("edit", "error", "line", "fragment", "suggestion"),
    [
        (
            ("basis: 测试依据\n", "basis: 测试依据\nbasis: 又一个\n"),
            PolicyDefinitionError,
            6,
            "duplicate key `basis`",
            "remove one",
        ),
        (
            ("department:", "departmnt:"),
            PolicyDefinitionError,
            3,
            "unknown key `departmnt`",
            "did you mean `department`?",
        ),
        (
            ("on_fail: reject", "on_fail: rejct"),
            PolicyDefinitionError,
            39,
            "on_fail of `C1`",
            "did you mean `reject`?",
        ),
        (
            ("      2025-01-01: 81\n", "      2025-01-01: eighty\n"),
            PolicyDefinitionError,
            12,
            "`eighty` is not a int",
            None,
        ),
        (
            ("    type: money", "    type: mony"),
            PolicyDefinitionError,
            15,
            "unknown type 'mony'",
            None,
        ),
        (
            ("      status: text\n      last", "      status: txt\n      last"),
            PolicyDefinitionError,
            23,
            "unknown type 'txt'",
            None,
        ),
        (("    message: 消息\n", ""), PolicyDefinitionError, 37, "missing `message`", None),
        (("name: 测试事项\n", "name: [unclosed\n"), PolicySyntaxError, 3, "YAML", None),
        (
            ("  limit:\n", "  person:\n"),
            PolicyDefinitionError,
            19,
            "`person` is already defined",
            None,
        ),
        (
            ("      2025-01-01: 81\n", "      2025-02-30: 81\n"),
            PolicySyntaxError,
            12,
            "`2025-02-30` is not a real calendar date",
            "YYYY-MM-DD",
        ),
    ],
)
def test_structure_errors(
    edit: tuple[str, str],
    error: type[PolicyError],
    line: int,
    fragment: str,
    suggestion: str | None,
) -> None:
    old, new = edit
    assert old in GOOD
    with pytest.raises(error) as info:
        load_policy_text(GOOD.replace(old, new, 1), "bad.yaml")
    assert fragment in info.value.message
    assert info.value.location is not None
    assert (info.value.location.file, info.value.location.line) == ("bad.yaml", line)
    if suggestion:
        assert info.value.suggestion and suggestion in info.value.suggestion
    assert str(info.value).startswith(f"bad.yaml:{line}")


def test_duplicate_reason_code() -> None:
    text = (
        GOOD + "  - code: C1\n    require: person is present\n    on_fail: refer\n"
        "    message: m\n    basis: b\n"
    )
    with pytest.raises(PolicyDefinitionError, match="reason code `C1` appears twice"):
        load_policy_text(text, "dup.yaml")


def test_result_may_not_read_a_record_that_can_be_absent_on_approval() -> None:
    text = BASE.format(require="fund.balance > 0") + "result:\n  amount: fund.balance\n"
    with pytest.raises(PolicyError, match="reads `fund`") as info:
        load_policy_text(text, "r.yaml")
    assert info.value.suggestion == "add a condition `require: fund is present`"
    guarded = BASE.format(require="fund is present") + "result:\n  amount: fund.balance\n"
    assert load_policy_text(guarded, "r.yaml").result[0].name == "amount"


def test_real_rules_folder_loads_every_item() -> None:
    policies = load_policy_folder(RULES)
    assert set(policies) == {
        "elderly-allowance",
        "elderly-allowance-certification",
        "housing-fund-rent-withdrawal",
        "housing-fund-retirement-withdrawal",
        "senior-card-new",
        "senior-card-replacement",
        "senior-card-renewal",
    }


def test_folder_with_one_bad_file_loads_nothing_and_lists_every_error(tmp_path: Path) -> None:
    for path in RULES.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    broken = tmp_path / "senior-card-new.yaml"
    broken.write_text(
        broken.read_text(encoding="utf-8").replace("age >= min_age", "age >= min_agee"),
        encoding="utf-8",
    )
    other = tmp_path / "senior-card-renewal.yaml"
    other.write_text(
        other.read_text(encoding="utf-8").replace("on_fail: refer", "on_fail: maybe"),
        encoding="utf-8",
    )
    with pytest.raises(PolicyFolderError) as info:
        load_policy_folder(tmp_path)
    files = sorted(Path(e.location.file).name for e in info.value.errors if e.location)
    assert files == ["senior-card-new.yaml", "senior-card-renewal.yaml"]
    assert "did you mean `min_age`?" in str(info.value)


def test_two_files_for_one_item(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(GOOD, encoding="utf-8")
    with pytest.raises(PolicyFolderError, match="also defined in"):
        load_policy_folder(tmp_path)
