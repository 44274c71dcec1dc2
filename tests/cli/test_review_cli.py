"""``miaopi review``: an officer works the queue from the command line."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from approval_service.cli.main import app
from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container
from approval_service.settings import Settings
from data_lookups.database import ensure_schema, make_engine
from data_lookups.importer import import_directory
from tests.api.registry import TODAY, RegistryBuilder

ROOT = Path(__file__).resolve().parents[2]


def test_queue_approve_and_reject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builder = RegistryBuilder()
    unseen = builder.person(date(1938, 3, 3), last_seen=date(2024, 1, 1))
    no_photo = builder.person(date(1950, 1, 1), photo=False)
    builder.add(
        "allowances.jsonl",
        id_number=unseen,
        status="active",
        start_date="2020-01-01",
        monthly_amount="120.00",
    )
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    engine = make_engine(url)
    ensure_schema(engine)
    import_directory(engine, builder.write(tmp_path / "reg"), today=TODAY)
    engine.dispose()
    monkeypatch.setenv("MIAOPI_DATABASE_URL", url)
    monkeypatch.setenv("MIAOPI_RULES_DIR", str(ROOT / "rules"))
    service = ApplicationService(Container.build(Settings()))
    first, _ = service.apply("counter", "elderly-allowance-certification", unseen, None)
    second, _ = service.apply("counter", "senior-card-new", no_photo, {"mailing_address": "亳州市"})
    service.c.close()
    runner = CliRunner()
    listed = runner.invoke(app, ["review", "queue", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {c["application_id"] for c in json.loads(listed.output)["cases"]} == {
        first["application_id"],
        second["application_id"],
    }
    approved = runner.invoke(
        app, ["review", "approve", second["application_id"], "--officer", "王科员"]
    )
    assert approved.exit_code == 0 and "card_no = AH" in approved.output
    bad = runner.invoke(
        app, ["review", "reject", first["application_id"], "--officer", "李", "--reason", "oops"]
    )
    assert bad.exit_code != 0 and "CODE:message" in bad.output
    rejected = runner.invoke(
        app,
        [
            "review",
            "reject",
            first["application_id"],
            "--officer",
            "李科员",
            "--reason",
            "NOT_SEEN:上门核实未见本人",
        ],
    )
    assert rejected.exit_code == 0 and "NOT_SEEN" in rejected.output
    twice = runner.invoke(
        app, ["review", "approve", first["application_id"], "--officer", "王科员"]
    )
    assert twice.exit_code == 1 and "not open for review" in twice.output
    assert json.loads(runner.invoke(app, ["review", "queue", "--json"]).output)["cases"] == []
