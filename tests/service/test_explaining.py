"""Explain against today's registry, and replay a stored decision after the policy changed."""

from __future__ import annotations

import shutil
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from approval_service.cli.main import app
from approval_service.service import records
from approval_service.service.applications import ApplicationService
from approval_service.service.clock import FixedClock
from approval_service.service.container import Container
from approval_service.service.explaining import UnknownApplication, explain, replay
from approval_service.settings import Settings
from data_lookups.database import ensure_schema, make_engine
from data_lookups.importer import import_directory
from tests.api.registry import TODAY, RegistryBuilder

ROOT = Path(__file__).resolve().parents[2]
ZONE = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Settings, str, str]:
    builder = RegistryBuilder()
    old = builder.person(date(1944, 2, 29))  # 82 on 2026-11-23
    young = builder.person(date(1960, 1, 1))
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    engine = make_engine(url)
    ensure_schema(engine)
    assert all(
        f.applied
        for f in import_directory(engine, builder.write(tmp_path / "reg"), today=TODAY).files
    )
    engine.dispose()
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    return Settings(database_url=url, rules_dir=rules), old, young


def clock() -> FixedClock:
    return FixedClock(ZONE, datetime(2026, 11, 23, 9, 30, tzinfo=ZONE))


def test_explain_shows_every_condition_and_issues_nothing(setup: tuple[Settings, str, str]) -> None:
    settings, _, young = setup
    container = Container.build(settings, clock=clock())
    doc = explain(container, "elderly-allowance", young)
    assert doc["decision"] == "rejected" and [r["code"] for r in doc["reasons"]] == [
        "AGE_BELOW_MIN"
    ]
    age = next(t for t in doc["trace"] if t["code"] == "AGE_BELOW_MIN")
    assert age["outcome"] == "failed" and age["values"] == {"age": 66, "min_age": 80}
    assert age["require"] == "age >= min_age" and age["on_fail"] == "reject"
    assert (
        explain(container, "elderly-allowance", young, as_of=date(2040, 1, 1))["decision"]
        == "approved"
    )
    with container.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM applications").scalar() == 0
    container.close()


def test_replay_uses_the_policy_it_was_decided_with(setup: tuple[Settings, str, str]) -> None:
    settings, old, _ = setup
    container = Container.build(settings, clock=clock())
    doc, _ = ApplicationService(container).apply("portal", "elderly-allowance", old, None)
    assert doc["decision"] == "approved"
    with container.engine.connect() as conn:
        stored = records.get_application(conn, doc["application_id"])
    assert stored is not None
    # the record keeps what the decision found; the conditions' text is the policy's,
    # kept once by its sha256, and replay shows it from there
    assert [set(e) for e in stored["trace"]] == [{"code", "outcome", "values"}] * 5
    container.close()
    policy = Path(settings.rules_dir) / "elderly-allowance.yaml"
    policy.write_text(
        policy.read_text(encoding="utf-8")
        .replace("2020-01-01: 80", "2020-01-01: 85")
        .replace('version: "2025.1"', 'version: "2026.2"'),
        encoding="utf-8",
    )
    changed = Container.build(settings, clock=clock())
    replayed = replay(changed, doc["application_id"])
    assert replayed["reproduced"] is True
    assert replayed["policy"]["version"] == "2025.1"
    assert replayed["replayed"]["result"]["monthly_amount"] == "60.00"
    assert [(e["code"], e["outcome"]) for e in replayed["trace"]] == [
        (e["code"], e["outcome"]) for e in stored["trace"]
    ]
    age = next(e for e in replayed["trace"] if e["code"] == "AGE_BELOW_MIN")
    assert age["require"] == "age >= min_age" and age["on_fail"] == "reject"
    today = replayed["today"]
    assert today["policy"]["version"] == "2026.2" and today["same_decision"] is False
    assert [r["code"] for r in today["reasons"]] == ["AGE_BELOW_MIN", "ALREADY_RECEIVING"]
    with pytest.raises(UnknownApplication):
        replay(changed, "nope")
    changed.close()


def test_explain_command(setup: tuple[Settings, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _, young = setup
    monkeypatch.setenv("MIAOPI_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MIAOPI_RULES_DIR", str(settings.rules_dir))
    runner = CliRunner()
    human = runner.invoke(app, ["explain", "elderly-allowance", young, "--as-of", "2026-11-23"])
    assert human.exit_code == 0, human.output
    assert "AGE_BELOW_MIN" in human.output and "min_age = 80" in human.output
    as_json = runner.invoke(app, ["explain", "senior-card-new", young, "--json"])
    assert as_json.exit_code == 0 and '"decision":"approved"' in as_json.output
    bad = runner.invoke(app, ["explain", "elderly-allowance", young, "--as-of", "2026-02-30"])
    assert bad.exit_code != 0 and "YYYY-MM-DD" in bad.output
    invalid = runner.invoke(app, ["explain", "elderly-allowance", "123"])
    assert invalid.exit_code == 1 and "ID number" in invalid.output
