"""``miaopi serve --workers 2``: a scrape of /metrics reaches one worker, and gives the
whole service's totals (prometheus_client's multiprocess mode, in a temporary folder
that ``serve`` removes when it stops), each worker's counts at most a flush late."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector

from approval_service.api.main import METRICS_FLUSH_SECONDS
from tests.api.server import free_port
from tests.service.record_rows import OLD, new_id

ROOT = Path(__file__).resolve().parents[2]
MIAOPI = Path(sys.executable).with_name("miaopi")
ROUND = 20  # requests sent at a time, until both workers have answered some


def call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request on a connection of its own: the kernel may hand it to either worker."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"X-API-Key": "k", "Content-Type": "application/json"}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def unknown_items(text: str) -> float:
    found = re.search(r'^miaopi_request_errors_total\{code="unknown_item"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def by_worker(folder: Path) -> list[float]:
    """Each worker's own count of unknown_item errors, from its file in the folder."""
    counts = []
    for path in sorted(folder.glob("counter_*.db")):
        for metric in MultiProcessCollector.merge([str(path)]):  # type: ignore[no-untyped-call]
            for sample in metric.samples:
                wanted = sample.name == "miaopi_request_errors_total"
                if wanted and sample.labels.get("code") == "unknown_item" and sample.value:
                    counts.append(sample.value)
    return counts


def test_metrics_add_up_every_workers_counts(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIAOPI_", "PROMETHEUS_"))}
    env |= {
        "MIAOPI_DATABASE_URL": f"sqlite:///{tmp_path / 'miaopi.db'}",
        "MIAOPI_API_KEYS": "portal:k",
        "MIAOPI_RULES_DIR": str(ROOT / "rules"),
        "TMPDIR": str(tmp_path),  # where serve makes the workers' metrics folder
    }
    serve = [str(MIAOPI), "serve", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(serve, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if call(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "miaopi serve did not start"
            time.sleep(0.1)
        (folder,) = tmp_path.glob("miaopi-metrics-*")
        body = json.dumps({"item": "no-such-item", "applicant_id": new_id(OLD)}).encode()
        sent = 0
        deadline = time.monotonic() + 60  # the second worker may still be starting
        while len(by_worker(folder)) < 2 and time.monotonic() < deadline:
            statuses = {call(port, "POST", "/v1/precheck", body)[0] for _ in range(ROUND)}
            assert statuses == {404}
            sent += ROUND
        # each worker passes its counts on to its file once a second (metric_tallies)
        deadline = time.monotonic() + 10 * METRICS_FLUSH_SECONDS
        while sum(by_worker(folder)) < sent and time.monotonic() < deadline:
            time.sleep(0.1)
        counts = by_worker(folder)
        assert len(counts) == 2 and sum(counts) == sent  # both workers answered some
        scrapes = [unknown_items(call(port, "GET", "/metrics")[1].decode()) for _ in range(10)]
        assert scrapes == [sent] * 10  # whichever worker answered the scrape
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not list(tmp_path.glob("miaopi-metrics-*"))  # removed when serve stopped
