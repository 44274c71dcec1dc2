"""Percentiles against known data, error classification, the JSON keys of the contract, the PNG."""

from __future__ import annotations

import json
from array import array
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from approval_service.loadtest import report
from approval_service.loadtest.mix import Plan, Pools, build_plan
from approval_service.loadtest.run_result import CONNECTION_ERROR, TIMEOUT, UNSENT, RunResult


def recorded(latencies_ms: list[float], statuses: list[int], outcomes: list[int]) -> RunResult:
    n = len(latencies_ms)
    return RunResult(
        rate=100.0,
        duration_s=n / 100,
        count=n,
        lag_ns=array("q", [100_000] * n),
        wait_ns=array("q", [0] * n),
        latency_ns=array("q", [int(ms * 1e6) if ms >= 0 else -1 for ms in latencies_ms]),
        status=array("h", statuses),
        outcome=bytearray(outcomes),
        elapsed_s=n / 100,
        cpu_s=0.5,
        connections_opened=3,
        connections_peak=3,
    )


def plan_of(n: int, invalid: set[int] = frozenset()) -> Plan:  # type: ignore[assignment]
    plan = build_plan(Pools(), n, host="h", key="k", run_id="r", today=date(2026, 11, 23))
    plan.expect_422[:] = bytes(1 if i in invalid else 0 for i in range(n))
    return plan


def test_percentiles_of_a_uniform_distribution() -> None:
    values = np.arange(1, 10_001, dtype=np.int64) * 100_000  # 0.1 ms .. 1000 ms
    lat = report.latency_ms(values)
    assert lat["p50"] == pytest.approx(500, rel=2e-3)
    assert lat["p90"] == pytest.approx(900, rel=2e-3)
    assert lat["p99"] == pytest.approx(990, rel=2e-3)
    assert lat["p999"] == pytest.approx(999, rel=2e-3)
    assert lat["max"] == 1000
    assert lat["mean"] == pytest.approx(500.05, rel=1e-6)


def test_percentiles_never_exceed_the_maximum() -> None:
    lat = report.latency_ms(np.array([53_812_000] * 3, dtype=np.int64))
    assert lat["p999"] <= lat["max"] == 53.812


def test_a_long_tail_is_seen() -> None:
    values = np.array([1_000_000] * 990 + [2_000_000_000] * 10, dtype=np.int64)
    lat = report.latency_ms(values)
    assert lat["p50"] == pytest.approx(1, rel=1e-3)
    assert lat["p999"] == pytest.approx(2000, rel=1e-3)


def test_errors_by_kind_and_expected_422s() -> None:
    statuses = [201, 200, 422, 422, 503, 500, CONNECTION_ERROR, TIMEOUT, UNSENT, 401]
    result = recorded([5.0] * 6 + [-1, -1, -1] + [5.0], statuses, [1, 2, 0, 0, 0, 0, 0, 0, 0, 0])
    plan = plan_of(10, invalid={2})
    summary = report.summarize(result, plan, url="http://127.0.0.1:1", connections=8)
    assert summary["errors_by_kind"] == {
        "connection": 1,
        "timeout": 1,
        "unsent": 1,
        "http_422": 1,  # 422 where a valid application was sent
        "http_401": 1,
        "http_500": 1,
        "http_503": 1,
    }
    assert summary["errors"] == 7
    assert summary["outcomes"]["approved"] == 1
    assert summary["outcomes"]["rejected"] == 1
    assert summary["outcomes"]["invalid_id"] == 1
    assert summary["answered"] == 7


def test_json_keys_of_the_contract(tmp_path: Path) -> None:
    n = 300
    result = recorded([float(1 + i % 50) for i in range(n)], [201] * n, [1, 2, 3] * 100)
    summary = report.summarize(result, plan_of(n), url="http://127.0.0.1:1", connections=8)
    for key in ("rate_target", "throughput", "errors", "latency_ms"):
        assert key in summary
    assert set(summary["latency_ms"]) >= {"p50", "p90", "p99", "p999", "max"}
    for key in (
        "errors_by_kind",
        "outcomes",
        "generator_cpu_percent",
        "send_lag_ms",
        "duration_s",
        "requests",
    ):
        assert key in summary
    assert summary["rate_target"] == 100
    assert summary["throughput"] == pytest.approx(100)
    assert summary["errors"] == 0
    assert summary["warnings"] == []
    assert summary["generator_cpu_percent"] == pytest.approx(100 * 0.5 / 3, abs=0.05)
    path = tmp_path / "r.json"
    report.write_json(summary, path)
    assert json.loads(path.read_text()) == summary


def test_png_is_written(tmp_path: Path) -> None:
    n = 500
    result = recorded([float(1 + i % 97) for i in range(n)], [201] * n, [1] * n)
    summary = report.summarize(result, plan_of(n), url="http://127.0.0.1:1", connections=8)
    path = tmp_path / "latency.png"
    report.write_png(result, summary, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_late_generator_is_reported() -> None:
    n = 200
    result = recorded([5.0] * n, [201] * n, [1] * n)
    result.lag_ns[:] = array("q", [20_000_000] * n)  # 20 ms late throughout
    summary = report.summarize(result, plan_of(n), url="http://127.0.0.1:1", connections=8)
    assert any("could not keep its schedule" in w for w in summary["warnings"])
