"""The README's worked example: a new item from one policy file and its cases, no Python change."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from approval_service.cli.main import app

ROOT = Path(__file__).resolve().parents[1]


def example_blocks() -> tuple[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Worked example", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "the worked example has a policy block and a cases block"
    return blocks[0], blocks[1]


@pytest.fixture
def rules_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    policy, cases = example_blocks()
    (rules / "senior-bus-pass.yaml").write_text(policy, encoding="utf-8")
    (rules / "cases" / "senior-bus-pass.yaml").write_text(cases, encoding="utf-8")
    monkeypatch.setenv("MIAOPI_RULES_DIR", str(rules))
    return rules


def test_new_item_lints_tests_and_shows(rules_dir: Path) -> None:
    runner = CliRunner()
    lint = runner.invoke(app, ["rules", "lint"])
    assert lint.exit_code == 0, lint.output
    tested = runner.invoke(
        app, ["rules", "test", str(rules_dir / "cases" / "senior-bus-pass.yaml")]
    )
    assert tested.exit_code == 0, tested.output
    assert re.search(r"^\d+ passed, 0 failed$", tested.output, flags=re.M)
    shown = runner.invoke(app, ["rules", "show", "senior-bus-pass"])
    assert shown.exit_code == 0 and "老年人免费乘车证办理" in shown.output


def test_new_item_is_served(rules_dir: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from approval_service.api.main import create_app
    from approval_service.service.container import Container
    from approval_service.settings import Settings

    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        rules_dir=rules_dir,
        api_keys="portal:k",
    )
    container = Container.build(settings)
    with TestClient(create_app(container)) as client:
        items = {
            i["item"] for i in client.get("/v1/items", headers={"X-API-Key": "k"}).json()["items"]
        }
        assert "senior-bus-pass" in items
        answer = client.post(
            "/v1/precheck",
            headers={"X-API-Key": "k"},
            json={"item": "senior-bus-pass", "applicant_id": "11010519491231002X"},
        )
        assert (
            answer.status_code == 200 and answer.json()["reasons"][0]["code"] == "PERSON_NOT_FOUND"
        )
    container.close()
