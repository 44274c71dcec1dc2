"""``miaopi data generate`` and ``miaopi data import`` through the Typer sub-app."""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_rows import new_id, person, write_jsonl
from typer.testing import CliRunner

from approval_service.cli.data import app

runner = CliRunner()


def test_generate_then_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIAOPI_DATABASE_URL", f"sqlite:///{tmp_path}/var/registry.sqlite3")
    result = runner.invoke(
        app,
        [
            "generate",
            str(tmp_path / "reg"),
            "--people",
            "500",
            "--seed",
            "3",
            "--as-of",
            "2026-11-23",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reg" / "population.jsonl").read_text().count("\n") == 500
    result = runner.invoke(app, ["import", str(tmp_path / "reg")])
    assert result.exit_code == 0, result.output
    assert "population.jsonl: 500 valid lines, applied" in result.output


def test_generate_rejects_a_bad_date(tmp_path: Path) -> None:
    result = runner.invoke(app, ["generate", str(tmp_path), "--people", "1", "--as-of", "11/23"])
    assert result.exit_code != 0


def test_import_lists_problems_and_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIAOPI_DATABASE_URL", f"sqlite:///{tmp_path}/var/registry.sqlite3")
    write_jsonl(
        tmp_path / "reg",
        "population.jsonl",
        [person(new_id()), person(new_id(), birth_date="1950-02-30")],
    )
    result = runner.invoke(app, ["import", str(tmp_path / "reg")])
    assert result.exit_code == 1
    assert (
        "population.jsonl:2: birth_date: '1950-02-30' is not a real date (use YYYY-MM-DD)"
        in result.output
    )


def test_import_when_the_database_is_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIAOPI_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    write_jsonl(tmp_path, "population.jsonl", [person(new_id())])
    result = runner.invoke(app, ["import", str(tmp_path)])
    assert result.exit_code == 2
    assert "cannot be reached" in result.output
