"""Benchmark scripts that operators run by hand: they measure what they say and clean up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from approval_service.service.metrics import CountingCache, Metrics, exposition

# the script's own defaults: the servers every benchmark uses
PG_ADMIN_URL = os.environ.get(
    "MIAOPI_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[1]
IDLE_FLOOR = [sys.executable, str(ROOT / "benchmarks" / "idle_floor.py")]
METRIC_UPDATES = [sys.executable, str(ROOT / "benchmarks" / "metric_updates.py")]
OUTBOX_KEYS = [sys.executable, str(ROOT / "benchmarks" / "outbox_keys.py")]


def run_script(command: list[str]) -> tuple[int, dict[str, Any]]:
    """Run a benchmark script that prints JSON: its process id (which names what it
    makes) and its figures. One that outlives the timeout is interrupted first, so that
    its ``finally`` removes what it made."""
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        raise
    assert proc.returncode == 0, err
    return proc.pid, json.loads(out)


def databases_like(pattern: str) -> int:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        found = admin.execute(
            "SELECT count(*) FROM pg_database WHERE datname LIKE %s", [pattern]
        ).fetchone()
    return int(found[0]) if found else 0


def test_idle_floor_times_each_round_trip_and_leaves_nothing_behind() -> None:
    pid, figures = run_script([*IDLE_FLOOR, "--requests", "10", "--pause-ms", "1", "--json"])
    assert (figures["requests"], figures["pause_ms"]) == (10, 1.0)
    for name in ("redis read", "pg read", "pg durable write"):
        for way in ("back_to_back", "after_a_pause"):
            assert 0 < figures[name][way]["p50"] <= figures[name][way]["p90"]
    assert databases_like(f"miaopi_floor_{pid}") == 0
    assert not redis.Redis.from_url(REDIS_URL).exists(f"miaopi_floor_{pid}:hash")


def test_idle_floor_refuses_too_few_requests_for_a_p90() -> None:
    result = subprocess.run([*IDLE_FLOOR, "--requests", "5"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "--requests: at least 10" in result.stderr


def test_metric_updates_times_both_ways_in_both_modes_and_removes_its_folder(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [*METRIC_UPDATES, "--json", "--applications", "200", "--rounds", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["applications"] == 200
    for mode in ("single", "multiprocess"):
        assert figures[mode]["direct"] > 0 and figures[mode]["tallied"] > 0
    assert not list(tmp_path.iterdir())  # the multiprocess folder is gone


def test_outbox_keys_measures_both_layouts_and_drops_its_database() -> None:
    pid, figures = run_script([*OUTBOX_KEYS, "--messages", "200", "--rounds", "1", "--json"])
    before, since = figures["medians"]["id and dedup key"], figures["medians"]["dedup key"]
    assert before["cpu_us"] >= 0 and since["cpu_us"] >= 0
    assert since["bytes"] < before["bytes"]  # an index fewer, and no id column
    assert databases_like(f"miaopi_outbox_{pid}_%") == 0


def test_e2e_reads_the_services_own_counts_of_misses_and_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from e2e_support import counters_between, parse_counters

    metrics = Metrics()
    cache = CountingCache(object(), metrics)
    metrics.count(cache.hits)  # before the run: not the run's
    metrics.observe(metrics.labelled(metrics.latency, "senior-card-new"), 0.5)
    before = parse_counters(exposition(metrics).decode())
    for _ in range(3):
        metrics.count(cache.hits)
    metrics.count(cache.misses)
    metrics.observe_group(5, 0.001)
    metrics.observe_group(1, 0.0)
    metrics.observe(metrics.fact_read, 0.002)
    metrics.observe(metrics.fact_read, 0.004)
    # labelled children, one of them new since the first scrape: added up
    metrics.observe(metrics.labelled(metrics.latency, "senior-card-new"), 0.004)
    metrics.observe(metrics.labelled(metrics.latency, "elderly-allowance"), 0.008)
    metrics.observe(metrics.labelled(metrics.group_seconds, "at_once"), 0.001)
    metrics.observe(metrics.labelled(metrics.group_seconds, "checked"), 0.003)
    run = counters_between(before, parse_counters(exposition(metrics).decode()))
    assert (run["fact_cache_hits"], run["fact_cache_misses"]) == (3, 1)
    assert (run["write_groups"], run["mean_group_size"]) == (2, 3.0)
    assert run["fact_cache_miss_share"] == 0.25
    assert run["fact_read_mean_ms"] == 3.0
    assert run["decision_mean_ms"] == 6.0  # not the 0.5 s before the run
    assert run["write_queue_mean_ms"] == 0.5
    assert run["write_group_mean_ms"] == 2.0


def test_e2e_reports_the_way_each_group_went(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from e2e import summary_table
    from e2e_support import counters_between, parse_counters

    metrics = Metrics()
    metrics.observe(metrics.labelled(metrics.group_seconds, "at_once"), 0.002)  # before
    before = parse_counters(exposition(metrics).decode())
    for seconds in (0.001, 0.003, 0.002):
        metrics.observe(metrics.labelled(metrics.group_seconds, "at_once"), seconds)
    metrics.observe(metrics.labelled(metrics.group_seconds, "refused_at_once"), 0.008)
    metrics.observe(metrics.labelled(metrics.group_seconds, "checked"), 0.004)
    after = parse_counters(exposition(metrics).decode())
    # the totals every way together, as before, and each way's on its own, once each
    assert (after["write_group_count"], after["write_group_count@at_once"]) == (6, 4)
    assert after["write_group_sum"] == pytest.approx(0.020)
    assert after["write_group_sum@refused_at_once"] == pytest.approx(0.008)
    run = counters_between(before, after)
    assert run["write_group_paths"] == {
        "at_once": {"groups": 3, "mean_ms": 2.0, "share": 0.6},
        "checked": {"groups": 1, "mean_ms": 4.0, "share": 0.2},
        "refused_at_once": {"groups": 1, "mean_ms": 8.0, "share": 0.2},
    }
    assert run["write_group_mean_ms"] == 3.6  # every way together, as before
    table = summary_table({"service": run}, {})
    assert "groups refused_at_once" in table and "20.0% of groups, 8.0 ms" in table
