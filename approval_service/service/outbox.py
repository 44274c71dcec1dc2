"""Draining the outbox to the SMS webhook, at least once, never blocking a decision.

Each round claims due messages by moving their next attempt past a lease (so a
second ``miaopi notify`` skips them, and a crash mid-send only delays them),
sends each outside any transaction with the dedup key as ``Idempotency-Key``,
then marks it sent or schedules a retry with exponential back-off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, select, update

from approval_service.service.records import outbox
from data_lookups.database import is_postgres, read_connection, write_transaction

LEASE = timedelta(seconds=60)
FIRST_RETRY_SECONDS = 5
MAX_RETRY = timedelta(hours=1)

Sender = Callable[[dict[str, Any]], None]


class SendFailed(Exception):
    """The webhook did not take the message."""


@dataclass
class DrainReport:
    sent: int = 0
    failed: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)


def webhook_sender(url: str, timeout: float = 10.0) -> Sender:
    client = httpx.Client(timeout=timeout)

    def send(message: dict[str, Any]) -> None:
        try:
            response = client.post(
                url, json=message, headers={"Idempotency-Key": message["dedup_key"]}
            )
        except httpx.HTTPError as exc:
            raise SendFailed(f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise SendFailed(f"HTTP {response.status_code}")

    return send


def pending(engine: Engine, now: datetime, limit: int = 100) -> list[dict[str, Any]]:
    """Due messages, without claiming them (for printing what would be sent)."""
    with read_connection(engine) as conn:
        rows = conn.execute(
            select(outbox)
            .where(outbox.c.sent_at.is_(None), outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.created_at)
            .limit(limit)
        ).mappings()
        return [dict(r) for r in rows]


def _claim(engine: Engine, now: datetime, limit: int) -> list[dict[str, Any]]:
    with write_transaction(engine) as conn:
        query = (
            select(outbox)
            .where(outbox.c.sent_at.is_(None), outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.created_at)
            .limit(limit)
        )
        if is_postgres(conn):
            query = query.with_for_update(skip_locked=True)
        rows = [dict(r) for r in conn.execute(query).mappings()]
        if rows:
            conn.execute(
                update(outbox)
                .where(outbox.c.dedup_key.in_([r["dedup_key"] for r in rows]))
                .values(next_attempt_at=now + LEASE)
            )
        return rows


def drain(
    engine: Engine, send: Sender, now: Callable[[], datetime], limit: int = 100
) -> DrainReport:
    """Send every due message once; returns what was sent and what will be retried."""
    report = DrainReport()
    for row in _claim(engine, now(), limit):
        message = {
            "dedup_key": row["dedup_key"],
            "application_id": row["application_id"],
            "recipient_id": row["recipient_id"],
            "text": row["text"],
        }
        try:
            send(message)
        except SendFailed as exc:
            attempts = row["attempts"] + 1
            delay = min(timedelta(seconds=FIRST_RETRY_SECONDS * 2 ** (attempts - 1)), MAX_RETRY)
            values: dict[str, Any] = {
                "attempts": attempts,
                "next_attempt_at": now() + delay,
                "last_error": str(exc)[:500],
            }
            report.failed += 1
        else:
            values = {"attempts": row["attempts"] + 1, "sent_at": now(), "last_error": None}
            report.sent += 1
            report.messages.append(message)
        with write_transaction(engine) as conn:
            key = outbox.c.dedup_key == row["dedup_key"]
            conn.execute(update(outbox).where(key).values(**values))
    return report
