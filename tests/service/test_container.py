"""Start-up refuses policies that read facts the registries do not provide, or unknown actions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from approval_service.errors import PolicyFolderError
from approval_service.service.container import Container
from approval_service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "      status: text\n",
            "      status: text\n      nickname: text\n",
            "no field `person.nickname`",
        ),
        (
            "      status: text\n",
            "      status: text\n      gender: int\n",
            "`person.gender` is declared int",
        ),
        ("issue: new_card", "issue: print_card", "is not an issuance action"),
    ],
)
def test_policy_that_does_not_fit_the_registries_is_refused(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    policy = rules / "senior-card-new.yaml"
    text = policy.read_text(encoding="utf-8")
    assert old in text
    policy.write_text(text.replace(old, new, 1), encoding="utf-8")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", rules_dir=rules)
    with pytest.raises(PolicyFolderError, match=message) as info:
        Container.build(settings)
    assert "senior-card-new.yaml" in str(info.value)
