"""``miaopi loadtest`` for two seconds against the real app on a small SQLite registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from approval_service.api.main import create_app
from approval_service.cli.main import app
from approval_service.loadtest.mix import ITEMS
from approval_service.service.container import Container
from approval_service.settings import Settings
from data_lookups.importer import import_directory
from data_lookups.synthetic import generate_registry
from tests.api.server import serving

ROOT = Path(__file__).resolve().parents[2]
KEY = "loadtest-key"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("registry")
    generate_registry(folder, 3000, seed=7, as_of=datetime.now(ZoneInfo("Asia/Shanghai")).date())
    return folder


@pytest.fixture(scope="module")
def url(registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database = tmp_path_factory.mktemp("db") / "miaopi.sqlite3"
    settings = Settings(
        database_url=f"sqlite:///{database}", rules_dir=ROOT / "rules", redis_url=None
    )
    container = Container.build(settings)
    result = import_directory(container.engine, registry, today=container.clock.today())
    assert all(f.applied for f in result.files), result
    try:
        with serving(create_app(container, api_keys={KEY: "loadtest"})) as base:
            yield base
    finally:
        container.close()


def test_loadtest_against_the_real_app(url: str, registry: Path, tmp_path: Path) -> None:
    args = ["loadtest", "--url", url, "--rate", "60", "--duration", "2", "--json"]
    args += ["--registry", str(registry), "--key", KEY, "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rate_target"] == 60
    assert summary["errors"] == 0, summary["errors_by_kind"]
    assert summary["requests"] == summary["answered"] == 120
    assert 45 <= summary["throughput"] <= 65
    assert set(summary["latency_ms"]) >= {"p50", "p90", "p99", "p999", "max"}
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["max"]
    assert sum(summary["outcomes"].values()) == 120
    assert set(summary["outcomes_by_item"]) == set(ITEMS)
    assert Path(summary["report_json"]).exists()
    assert Path(summary["report_png"]).exists()


def test_a_wrong_key_is_counted_as_errors(url: str, tmp_path: Path) -> None:
    args = ["loadtest", "--url", url, "--rate", "20", "--duration", "0.5", "--json"]
    args += ["--key", "wrong", "--out", str(tmp_path), "--no-png"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["errors"] == summary["requests"] == 10
    assert summary["errors_by_kind"] == {"http_401": 10}


def test_key_defaults_to_the_first_configured_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from approval_service.cli.loadtest import default_key

    monkeypatch.delenv("MIAOPI_LOADTEST_KEY", raising=False)
    monkeypatch.setenv("MIAOPI_API_KEYS", "portal:first, app:second")
    assert default_key() == "first"
    monkeypatch.setenv("MIAOPI_LOADTEST_KEY", "mine")
    assert default_key() == "mine"
