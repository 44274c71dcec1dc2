"""Ctrl-C stops a load test early and keeps what it measured: the requests due until then.

Against the stub server on 127.0.0.1: the engine stopped mid-schedule sends nothing
more, waits for what is in flight and reports only the requests that came due; a
second stop ends the wait; ``miaopi loadtest`` sent SIGINT writes its report and exits
130.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from approval_service.loadtest import client, report

from .stub import stub_server
from .test_schedule import plan_of, summarize

MIAOPI = [sys.executable, "-c", "from approval_service.cli.main import app; app()"]


def stopped_run(
    port: int, count: int, rate: float, stops_at: list[float], drain_s: float = 10.0
) -> client.RunResult:
    async def main() -> client.RunResult:
        engine = client.Engine(
            "127.0.0.1", port, plan_of(count), rate=rate, connections=16, drain_s=drain_s
        )
        loop = asyncio.get_running_loop()
        for moment in stops_at:
            loop.call_later(moment, engine.stop)
        return await engine.run()

    return asyncio.run(main())


def test_a_stopped_run_reports_only_the_requests_due_before_the_stop() -> None:
    with stub_server(0.05) as port:
        result = stopped_run(port, count=2000, rate=100, stops_at=[1.0])
    assert result.interrupted
    assert 40 <= result.count <= 150  # about a second of a 20 s schedule at 100/s
    assert result.duration_s == result.count / 100
    for values in (result.lag_ns, result.latency_ns, result.status, result.outcome):
        assert len(values) == result.count
    status = np.frombuffer(result.status, dtype=np.int16)
    assert (status == 201).all()  # what was sent was waited for and answered
    summary = summarize(result, plan_of(2000).first(result.count))
    assert summary["requests"] == summary["answered"] == result.count
    assert summary["interrupted"] is True
    assert any("stopped early" in w for w in summary["warnings"])  # type: ignore[attr-defined]


def test_a_second_stop_ends_the_wait_for_answers() -> None:
    started = time.perf_counter()
    with stub_server(30.0) as port:  # answers nothing within the run
        result = stopped_run(port, count=2000, rate=100, stops_at=[0.5, 1.0], drain_s=60)
    assert time.perf_counter() - started < 30  # neither the drain nor the answers awaited
    assert result.interrupted and 0 < result.count <= 150
    status = np.frombuffer(result.status, dtype=np.int16)
    # in flight on the 16 connections when the wait ended, or due and waiting for one
    assert (status == client.TIMEOUT).sum() == 16
    assert ((status == client.TIMEOUT) | (status == client.UNSENT)).all()


def test_a_stop_while_the_connections_open_sends_nothing() -> None:
    with stub_server(0.0) as port:
        result = stopped_run(port, count=500, rate=100, stops_at=[0.0])
    assert result.interrupted and result.count == 0
    summary = report.summarize(result, plan_of(500).first(0), url="u", connections=16)
    assert summary["requests"] == summary["answered"] == summary["errors"] == 0


def test_a_run_to_its_end_is_not_interrupted() -> None:
    with stub_server(0.0) as port:
        result = stopped_run(port, count=50, rate=100, stops_at=[])
    assert not result.interrupted and result.count == 50
    assert summarize(result, plan_of(50))["interrupted"] is False


def test_ctrl_c_writes_the_report_and_exits_130(tmp_path: Path) -> None:
    with stub_server(0.0) as port:
        proc = subprocess.Popen(
            [*MIAOPI, "loadtest", "--url", f"http://127.0.0.1:{port}", "--rate", "50",
             "--duration", "60", "--key", "k", "--json", "--no-png", "--out", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "sending at" in line:
                    break
            time.sleep(1.0)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, err
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert 0 < summary["requests"] < 3000 and summary["answered"] == summary["requests"]
    assert "stopped early" in err
    (written,) = tmp_path.glob("loadtest-*.json")
    assert json.loads(written.read_text())["requests"] == summary["requests"]
