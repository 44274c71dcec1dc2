"""``miaopi notify``: send the queued SMS texts to the webhook, or print them without one."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from approval_service.service.clock import Clock
from approval_service.settings import Settings
from data_lookups.database import ensure_schema, make_engine
from data_lookups.id_numbers import mask_id

console = Console(highlight=False)


def notify_command(
    webhook: Annotated[
        str | None, typer.Option(help="SMS webhook URL (default MIAOPI_NOTIFY_WEBHOOK)")
    ] = None,
    loop: Annotated[bool, typer.Option("--loop", help="keep draining until interrupted")] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, help="seconds between rounds with --loop")
    ] = 2.0,
    batch: Annotated[int, typer.Option(min=1, max=10000, help="messages per round")] = 100,
) -> None:
    """Drain the notification outbox (at least once, with retries and a dedup key)."""
    from approval_service.service.outbox import drain, pending, webhook_sender

    settings = Settings()
    engine = make_engine(settings.database_url)
    ensure_schema(engine)
    clock = Clock.of(settings.timezone)
    url = webhook or settings.notify_webhook
    if url is None:
        messages = pending(engine, clock.now(), batch)
        for message in messages:
            console.print(
                f"[dim]would send to {mask_id(message['recipient_id'])} "
                f"({message['dedup_key']}):[/] {escape(message['text'])}"
            )
        console.print(
            f"{len(messages)} message(s) due; no webhook configured (MIAOPI_NOTIFY_WEBHOOK), "
            "nothing sent"
        )
        engine.dispose()
        return
    send = webhook_sender(url)
    try:
        while True:
            report = drain(engine, send, clock.now, batch)
            if report.sent or report.failed:
                console.print(f"sent {report.sent}, failed {report.failed} (will retry)")
            if not loop:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()
