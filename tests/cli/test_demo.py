"""``miaopi demo``: a fresh SQLite registry, a key and sample requests that do what they say."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from approval_service.api.main import create_app
from approval_service.cli.main import app
from approval_service.service.container import Container
from approval_service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_demo_sets_up_and_prints_working_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIAOPI_RULES_DIR", str(ROOT / "rules"))
    monkeypatch.delenv("MIAOPI_DATABASE_URL", raising=False)
    monkeypatch.delenv("MIAOPI_REDIS_URL", raising=False)
    result = CliRunner().invoke(app, ["demo", "--no-serve", "--people", "2000"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "var" / "miaopi.sqlite3").exists()
    key = re.search(r"demo API key \(channel demo\): (\S+)", result.output)
    assert key is not None
    bodies = {
        m.group(1): json.loads(shlex.split(m.group(2))[0])
        for m in re.finditer(
            r"# (approval|rejection|referral)\n.*?-d ('.*?')\n", result.output, re.S
        )
    }
    assert set(bodies) == {"approval", "rejection", "referral"}
    container = Container.build(Settings(rules_dir=ROOT / "rules"))
    with TestClient(create_app(container, api_keys={key.group(1): "demo"})) as client:
        docs = {
            name: client.post(
                "/v1/applications", json=body, headers={"X-API-Key": key.group(1)}
            ).json()
            for name, body in bodies.items()
        }
    container.close()
    assert docs["approval"]["decision"] == "approved"
    assert docs["rejection"]["decision"] == "rejected" and len(docs["rejection"]["reasons"]) >= 2
    assert docs["referral"]["decision"] == "referred" and docs["referral"]["deadline"]
