"""The notification outbox: never lost, retried with back-off, at least once with a dedup key."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from approval_service.cli.main import app
from approval_service.service.applications import ApplicationService
from approval_service.service.clock import FixedClock
from approval_service.service.container import Container
from approval_service.service.outbox import LEASE, SendFailed, drain, webhook_sender
from approval_service.settings import Settings
from data_lookups.database import ensure_schema, make_engine
from data_lookups.importer import import_directory
from tests.api.registry import TODAY, RegistryBuilder

ROOT = Path(__file__).resolve().parents[2]
ZONE = ZoneInfo("Asia/Shanghai")


class Webhook:
    """A local SMS gateway that fails the first ``failures`` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[dict[str, Any]] = []
        self.keys: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if hook.failures > 0:
                    hook.failures -= 1
                    self.send_response(503)
                else:
                    hook.received.append(body)
                    hook.keys.append(self.headers["Idempotency-Key"])
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def decided(
    pg_database: Callable[[str], str], tmp_path: Path
) -> Iterator[tuple[Container, list[str]]]:
    url = pg_database(f"outbox_{tmp_path.name[-8:]}".replace("-", "_"))
    builder = RegistryBuilder()
    people = [
        builder.person(date(1940, 1, 1)),
        builder.person(date(1990, 1, 1)),
        builder.stranger(),
    ]
    engine = make_engine(url)
    ensure_schema(engine)
    import_directory(engine, builder.write(tmp_path / "reg"), today=TODAY)
    engine.dispose()
    container = Container.build(
        Settings(database_url=url, rules_dir=ROOT / "rules"),
        clock=FixedClock(ZONE, datetime(2026, 11, 23, 9, 0, tzinfo=ZONE)),
    )
    service = ApplicationService(container)
    ids = [
        service.apply("portal", "elderly-allowance", p, None)[0]["application_id"] for p in people
    ]
    yield container, ids
    container.close()


def test_every_decision_is_queued_in_its_own_transaction(
    decided: tuple[Container, list[str]],
) -> None:
    container, ids = decided
    with container.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT application_id, text FROM outbox ORDER BY created_at")
        ).all()
    assert [r[0] for r in rows] == ids
    approved, rejected, referred = (r[1] for r in rows)
    assert "经系统秒批已办结" in approved and "每月金额（元）：60.00" in approved
    assert "未通过" in rejected and "1. 您未满80周岁" in rejected
    assert "已转工作人员审核" in referred and "2026-11-26" in referred


def test_failing_then_recovering_webhook(decided: tuple[Container, list[str]]) -> None:
    container, ids = decided
    hook = Webhook(failures=3)
    now = [datetime(2026, 11, 23, 9, 1, tzinfo=ZONE)]
    send = webhook_sender(hook.url, timeout=5)
    try:
        first = drain(container.engine, send, lambda: now[0])
        assert (first.sent, first.failed) == (0, 3)
        assert drain(container.engine, send, lambda: now[0]).sent == 0  # backing off: nothing due
        now[0] += timedelta(seconds=6)
        second = drain(container.engine, send, lambda: now[0])
        assert (second.sent, second.failed) == (3, 0)
        now[0] += timedelta(hours=2)
        assert drain(container.engine, send, lambda: now[0]).sent == 0  # nothing sent twice
    finally:
        hook.close()
    assert sorted(m["application_id"] for m in hook.received) == sorted(ids)
    assert hook.keys == [m["dedup_key"] for m in hook.received]
    with container.engine.connect() as conn:
        attempts = (
            conn.execute(text("SELECT attempts FROM outbox ORDER BY created_at")).scalars().all()
        )
    assert attempts == [2, 2, 2]


def test_crash_mid_send_redelivers_with_the_same_dedup_key(
    decided: tuple[Container, list[str]],
) -> None:
    container, _ = decided
    delivered: list[str] = []
    now = datetime(2026, 11, 23, 9, 1, tzinfo=ZONE)

    def crashing(message: dict[str, Any]) -> None:
        delivered.append(message["dedup_key"])
        raise KeyboardInterrupt  # the process dies after the gateway took the message

    with pytest.raises(KeyboardInterrupt):
        drain(container.engine, crashing, lambda: now)

    def ok(message: dict[str, Any]) -> None:
        delivered.append(message["dedup_key"])

    assert drain(container.engine, ok, lambda: now).sent == 0  # the claimed batch is leased
    assert drain(container.engine, ok, lambda: now + LEASE + timedelta(seconds=1)).sent == 3
    assert delivered[0] == delivered[1] and len(delivered) == 4  # redelivered under the same key


def test_sender_error_is_a_send_failure() -> None:
    send = webhook_sender("http://127.0.0.1:9/none", timeout=0.5)
    with pytest.raises(SendFailed):
        send({"dedup_key": "k", "text": "t"})


def test_notify_without_webhook_prints_masked(
    decided: tuple[Container, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    container, _ = decided
    monkeypatch.setenv("MIAOPI_DATABASE_URL", container.settings.database_url)
    monkeypatch.delenv("MIAOPI_NOTIFY_WEBHOOK", raising=False)
    result = CliRunner().invoke(app, ["notify"])
    assert result.exit_code == 0, result.output
    assert "3 message(s) due" in result.output and "********" in result.output
