"""Ctrl-C stops a load test early and keeps what it measured: the requests due until then.

Against the stub server on 127.0.0.1: the engine stopped mid-schedule sends nothing
that was not due yet, waits for what is in flight and reports only the requests that
came due; a second stop ends the wait; ``miaopi loadtest`` sent SIGINT writes its
report and exits 130.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from approval_service.loadtest import client, report
from approval_service.loadtest.run_result import ABANDONED, UNSENT, RunResult

from .stub import stub_server
from .test_schedule import MS, plan_of, summarize

MIAOPI = [sys.executable, "-c", "from approval_service.cli.main import app; app()"]


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the run never got there"
        await asyncio.sleep(0.01)


def stopped_run(
    port: int,
    count: int,
    rate: float,
    when: Callable[[client.Engine], bool],
    *,
    stops: int = 1,
    drain_s: float = 10.0,
) -> RunResult:
    """A run stopped ``stops`` times as soon as ``when`` holds, after the clock started."""

    async def main() -> RunResult:
        engine = client.Engine(
            "127.0.0.1", port, plan_of(count), rate=rate, connections=16, drain_s=drain_s
        )

        async def stopper() -> None:
            await until(lambda: engine.start > 0 and when(engine))
            for _ in range(stops):
                engine.stop()

        task = asyncio.get_running_loop().create_task(stopper())
        result = await engine.run()
        await task
        return result

    return asyncio.run(main())


def test_a_stopped_run_reports_only_the_requests_due_before_the_stop() -> None:
    with stub_server(0.05) as port:
        result = stopped_run(port, 2000, 100, lambda e: e.dispatched >= 50)
    assert result.interrupted
    assert 50 <= result.count < 500 and result.duration_s < 5  # of the 20 s planned
    arrays = (result.lag_ns, result.wait_ns, result.latency_ns, result.status, result.outcome)
    assert {len(values) for values in arrays} == {result.count}
    status = np.frombuffer(result.status, dtype=np.int16)
    assert (status == 201).all()  # what came due was sent, waited for and answered
    summary = summarize(result, plan_of(2000).first(result.count))
    assert summary["answered"] == result.count and summary["errors"] == 0
    assert summary["interrupted"] is True
    assert any("stopped early" in w for w in summary["warnings"])  # type: ignore[attr-defined]


def test_what_came_due_while_the_scheduler_slept_is_sent_at_the_stop() -> None:
    """A scheduler behind its schedule: the requests due by the stop are the run's."""

    async def main() -> int:
        engine = client.Engine("127.0.0.1", 1, plan_of(1000), rate=1000)
        now = [0]

        async def oversleep(seconds: float) -> None:  # wakes 100 ms late, every time
            now[0] += 100 * MS
            await asyncio.sleep(3600)

        engine.clock, engine.sleep = (lambda: now[0]), oversleep
        engine.start = 10 * MS
        engine.max_conns = 0  # nothing is sent: due requests queue
        engine._scheduler = asyncio.get_running_loop().create_task(engine._schedule(1000))
        await asyncio.sleep(0)  # nothing was due yet: it sleeps
        assert engine.dispatched == 0
        now[0] = 60 * MS  # 50 ms after the start: requests 0 to 50 are due
        engine.stop()
        await asyncio.wait([engine._scheduler])
        return engine.dispatched

    assert asyncio.run(main()) == 51


def test_a_second_stop_abandons_what_is_in_flight() -> None:
    started = time.perf_counter()
    with stub_server(60.0) as port:  # answers nothing within the run
        result = stopped_run(port, 2000, 100, lambda e: len(e.busy) == 16, stops=2, drain_s=60)
    assert time.perf_counter() - started < 45  # neither the drain nor the answers awaited
    assert result.interrupted and 16 <= result.count < 500
    status = np.frombuffer(result.status, dtype=np.int16)
    # in flight on the 16 connections when the wait ended, or due and waiting for one
    assert (status == ABANDONED).sum() == 16
    assert ((status == ABANDONED) | (status == UNSENT)).all()
    kinds = report.error_kinds(result, plan_of(2000).first(result.count))
    assert kinds["abandoned"] == 16


def test_a_stop_before_the_clock_starts_sends_nothing() -> None:
    async def main() -> RunResult:
        with stub_server(0.0) as port:
            engine = client.Engine("127.0.0.1", port, plan_of(500), rate=100)
            engine.stop()  # Ctrl-C while the connections open
            return await engine.run()

    result = asyncio.run(main())
    assert result.interrupted and result.count == 0
    summary = report.summarize(result, plan_of(500).first(0), url="u", connections=16)
    assert summary["requests"] == summary["answered"] == summary["errors"] == 0


def test_a_run_to_its_end_is_not_interrupted() -> None:
    with stub_server(0.0) as port:
        result = client.run("127.0.0.1", port, plan_of(50), rate=100, connections=16)
    assert not result.interrupted and result.count == 50
    assert summarize(result, plan_of(50))["interrupted"] is False


def test_ctrl_c_writes_the_report_and_exits_130(tmp_path: Path) -> None:
    served = [0]
    with stub_server(0.0, served=served) as port:
        proc = subprocess.Popen(
            [*MIAOPI, "loadtest", "--url", f"http://127.0.0.1:{port}", "--rate", "50",
             "--duration", "120", "--key", "k", "--json", "--no-png", "--out", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while served[0] < 5:  # the run is on: its Ctrl-C handler is in place
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert 5 <= summary["requests"] < 6000 and summary["answered"] == summary["requests"]
    assert "stopped early" in err
    (written,) = tmp_path.glob("loadtest-*.json")  # and nothing half-written beside it
    assert json.loads(written.read_text())["requests"] == summary["requests"]
    assert [p.name for p in tmp_path.iterdir()] == [written.name]
