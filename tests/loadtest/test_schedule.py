"""The engine keeps an open-loop schedule: arrivals never wait for answers.

Against a stub server on 127.0.0.1: a fast one is driven at the target rate; a slow
one (200 ms per request) still receives requests at the target rate, and latency
counted from the scheduled send time includes the 200 ms; with too few connections
the queue grows and so does the latency of later requests (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import socket
from datetime import date

import numpy as np
import pytest

from approval_service.loadtest import client, report
from approval_service.loadtest.mix import Plan, Pools, build_plan
from approval_service.loadtest.run_result import RunResult

from .stub import stub_server


def plan_of(count: int) -> Plan:
    plan = build_plan(Pools(), count, host="127.0.0.1", key="k", run_id="t", today=date.today())
    plan.expect_422[:] = bytes(count)  # the stub answers 201 to everything
    return plan


def summarize(result: RunResult, plan: Plan) -> dict[str, object]:
    return report.summarize(result, plan, url="http://127.0.0.1", connections=64)


def test_fast_server_gets_the_target_rate() -> None:
    plan = plan_of(600)
    with stub_server(0.0) as port:
        result = client.run("127.0.0.1", port, plan, rate=300, connections=64)
    summary = summarize(result, plan)
    assert summary["errors"] == 0
    assert summary["answered"] == 600
    assert 270 <= summary["throughput"] <= 315  # type: ignore[operator]
    assert summary["latency_ms"]["p50"] < 50  # type: ignore[index]
    # the typical request leaves on time; a pause of the machine (one was 0.2 s in a CI
    # run) may delay a few, which the report warns about but which is no schedule bug
    assert summary["send_lag_ms"]["p50"] < 30  # type: ignore[index]


def test_slow_server_still_receives_the_target_rate() -> None:
    """A closed loop on one connection would manage 5/s; the open loop sends 100/s."""
    plan = plan_of(200)
    with stub_server(0.2) as port:
        result = client.run("127.0.0.1", port, plan, rate=100, connections=64)
    summary = summarize(result, plan)
    assert summary["errors"] == 0
    assert summary["throughput"] >= 85  # type: ignore[operator]
    latency = summary["latency_ms"]
    assert 200 <= latency["p50"] < 400  # type: ignore[index]
    assert summary["send_lag_ms"]["p50"] < 30  # type: ignore[index]
    # the schedule was kept: no request waited for an answer to leave (that would be
    # 200 ms or more each, adding up); a pause of the machine alone stays well under 1 s
    lag = np.frombuffer(result.lag_ns, dtype=np.int64)
    assert lag.max() < 1e9


def test_latency_counts_from_the_schedule_when_the_server_falls_behind() -> None:
    """4 connections x 5/s = 20/s capacity at 50/s: the later requests wait longer."""
    plan = plan_of(100)
    with stub_server(0.2) as port:
        result = client.run("127.0.0.1", port, plan, rate=50, connections=4, drain_s=10)
    summary = summarize(result, plan)
    assert summary["errors"] == 0
    latency = np.frombuffer(result.latency_ns, dtype=np.int64) / 1e6
    assert latency[:10].mean() < 600
    assert latency[-10:].mean() > 2500  # ~ 100/20 - 100/50 = 3 s behind by the end
    assert summary["latency_ms"]["max"] > 2500  # type: ignore[index]
    assert summary["connections"]["peak"] == 4  # type: ignore[index]
    assert summary["send_lag_ms"]["p99"] < 30  # type: ignore[index]  # dispatch stayed on time
    assert any("free connection" in w for w in summary["warnings"])  # type: ignore[attr-defined]


def test_a_server_that_hangs_up_gives_connection_errors_not_a_hang() -> None:
    plan = plan_of(200)
    with stub_server(0.0, drop_every=10) as port:
        result = client.run("127.0.0.1", port, plan, rate=200, connections=16)
    summary = summarize(result, plan)
    assert summary["errors_by_kind"] == {"connection": 20}
    assert summary["answered"] == 180


def test_a_closed_port_fails_at_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ConnectionRefusedError):
            client.run("127.0.0.1", port, plan_of(20), rate=100)


def test_a_burst_never_opens_more_connections_than_allowed() -> None:
    plan = plan_of(100)
    with stub_server(0.05) as port:
        result = client.run("127.0.0.1", port, plan, rate=1000, connections=10)
    summary = summarize(result, plan)
    assert summary["errors"] == 0
    assert result.connections_peak == result.connections_opened == 10


MS = 1_000_000


@pytest.mark.parametrize(
    ("wait_ns", "interval_ns", "seconds"),
    [
        # fast schedules: a timer of at least 1 ms, whatever is left (it would spin)
        (5 * MS, 1 * MS, 0.005),
        (200_000, 1 * MS, 0.001),
        (15 * MS, 10 * MS, 0.015),
        # slow schedules (an idle service): sleep to 1.5 ms before, then turn the loop
        (100 * MS, 100 * MS, 0.0985),
        (30 * MS, 20 * MS, 0.0285),
        (3 * MS, 100 * MS, 0.0015),
        (2_000_000, 100 * MS, 0.001),  # the shortest timer; it may wake inside the 1.5 ms
        (1_500_000, 100 * MS, 0.0),
        (1 * MS, 100 * MS, 0.0),
        (1, 20 * MS, 0.0),
    ],
)
def test_a_slow_schedule_is_kept_closely_a_fast_one_without_spinning(
    wait_ns: int, interval_ns: int, seconds: float
) -> None:
    assert client.sleep_for(wait_ns, interval_ns) == pytest.approx(seconds)


LATE_NS = 800_000  # how late the fake event loop's timers fire
TURN_NS = 5_000  # what one turn of its loop takes


def dispatch_lags(rate: float, count: int) -> list[int]:
    """Each request's dispatch lag under a fake clock whose timers fire late."""
    engine = client.Engine("127.0.0.1", 1, plan_of(count), rate=rate)
    now = [0]

    async def late_sleep(seconds: float) -> None:
        now[0] += round(seconds * 1e9) + LATE_NS if seconds > 0 else TURN_NS

    engine.clock, engine.sleep = (lambda: now[0]), late_sleep
    engine.start = 10 * MS
    engine.max_conns = 0  # nothing is sent: the requests queue, their lag recorded
    asyncio.run(engine._schedule(count))
    return list(engine.lag)


def test_a_slow_schedule_dispatches_on_the_moment_although_timers_fire_late() -> None:
    lags = dispatch_lags(rate=10, count=20)
    assert max(lags) <= TURN_NS  # the loop turned to the moment, the late timer woke early


def test_a_fast_schedule_trusts_its_timer_and_is_late_with_it() -> None:
    lags = dispatch_lags(rate=200, count=20)
    assert sorted(lags)[len(lags) // 2] >= LATE_NS // 2  # no spinning at 200/s


def test_a_punctual_schedule_sends_every_request_and_gets_every_answer() -> None:
    plan = plan_of(10)
    with stub_server() as port:
        result = client.run("127.0.0.1", port, plan, rate=50)
    summary = summarize(result, plan)
    assert summary["errors"] == 0 and summary["answered"] == 10
