"""``miaopi serve --workers 2``: a scrape of /metrics reaches one worker, and gives the
whole service's totals (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.api.server import free_port
from tests.service.record_rows import OLD, new_id

ROOT = Path(__file__).resolve().parents[2]
MIAOPI = Path(sys.executable).with_name("miaopi")
REQUESTS = 40


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


def test_metrics_add_up_every_workers_counts(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIAOPI_", "PROMETHEUS_"))}
    env |= {
        "MIAOPI_DATABASE_URL": f"sqlite:///{tmp_path / 'miaopi.db'}",
        "MIAOPI_API_KEYS": "portal:k",
        "MIAOPI_RULES_DIR": str(ROOT / "rules"),
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
        body = json.dumps({"item": "no-such-item", "applicant_id": new_id(OLD)}).encode()
        statuses = {call(port, "POST", "/v1/precheck", body)[0] for _ in range(REQUESTS)}
        assert statuses == {404}
        scrapes = [unknown_items(call(port, "GET", "/metrics")[1].decode()) for _ in range(10)]
        assert scrapes == [REQUESTS] * 10  # whichever worker answered the scrape
    finally:
        proc.terminate()
        proc.wait(timeout=30)
