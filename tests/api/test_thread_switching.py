"""A serving worker lets its group writer take the GIL back soon (``MIAOPI_GIL_SWITCH_MS``)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from approval_service.api.main import create_app
from approval_service.api.thread_switching import apply_switch_interval
from approval_service.service.container import Container
from approval_service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restored_interpreter() -> Iterator[None]:
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    yield
    sys.setswitchinterval(interval)
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.parametrize(("setting", "expected_ms"), [(None, 5.0), ("0.25", 0.25), ("0.5", 0.5)])
def test_a_serving_worker_starts_with_the_configured_switch_interval(
    setting: str | None,
    expected_ms: float,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    restored_interpreter: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIAOPI_RULES_DIR", str(ROOT / "rules"))
    monkeypatch.delenv("MIAOPI_DATABASE_URL", raising=False)
    monkeypatch.delenv("MIAOPI_REDIS_URL", raising=False)
    if setting is None:
        monkeypatch.delenv("MIAOPI_GIL_SWITCH_MS", raising=False)
    else:
        monkeypatch.setenv("MIAOPI_GIL_SWITCH_MS", setting)
    sys.setswitchinterval(0.002)  # neither the default nor a setting: the worker sets it
    with TestClient(create_app()) as client:  # no container given: a serving worker
        assert client.get("/healthz").status_code == 200
        assert sys.getswitchinterval() == pytest.approx(expected_ms / 1000)


def test_a_container_given_by_a_test_leaves_the_interpreter_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restored_interpreter: None
) -> None:
    monkeypatch.chdir(tmp_path)
    sys.setswitchinterval(0.005)
    container = Container.build(Settings(rules_dir=ROOT / "rules", gil_switch_ms=0.25))
    try:
        with TestClient(create_app(container, api_keys={})):
            assert sys.getswitchinterval() == pytest.approx(0.005)
    finally:
        container.close()


@pytest.mark.parametrize("value", ["0", "-1", "101", "fast"])
def test_a_switch_interval_out_of_range_is_refused_naming_the_setting(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIAOPI_GIL_SWITCH_MS", value)
    with pytest.raises(ValidationError, match="gil_switch_ms"):
        Settings()


def test_apply_refuses_a_zero_interval(restored_interpreter: None) -> None:
    with pytest.raises(ValueError, match="above 0 ms"):
        apply_switch_interval(0)
