"""What the recording tests share: residents to apply for, applications decided as the
service decides them, and what the database and the writer's counters show afterwards."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    insert,
    select,
    text,
)

from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container
from approval_service.service.documents import recorded_document
from approval_service.service.records import applications
from data_lookups.database import write_transaction
from data_lookups.issuance import bump_versions
from data_lookups.models import Person, Photo

from .record_rows import NOW, OLD, new_id

ROOT = Path(__file__).resolve().parents[2]
ZONE = ZoneInfo("Asia/Shanghai")
TODAY = NOW.date()
YOUNG = date(2000, 1, 1)
CARD_FORM = {"mailing_address": "亳州市谯城区"}


def postgres(container: Container) -> bool:
    return container.engine.dialect.name == "postgresql"


PATHS = ("at_once", "checked", "refused_at_once")


def write_paths(container: Container) -> dict[str, float]:
    """How many groups went each way so far (the miaopi_write_groups counter)."""
    container.metrics.flush()
    sample = container.metrics.registry.get_sample_value
    return {path: sample("miaopi_write_groups_total", {"path": path}) or 0.0 for path in PATHS}


def paths_since(container: Container, before: dict[str, float]) -> dict[str, float]:
    now = write_paths(container)
    return {path: now[path] - before[path] for path in PATHS if now[path] != before[path]}


def add_person(
    container: Container, birth: date = OLD, *, photo: bool = True, **columns: Any
) -> str:
    """A resident (with a photo unless ``photo`` is False) registered the way issuance
    does: rows plus a version bump."""
    id_number = new_id(birth)
    with write_transaction(container.engine) as conn:
        register(conn, id_number, birth, photo=photo, **columns)
    return id_number


def register(
    conn: Connection, id_number: str, birth: date = OLD, *, photo: bool = True, **columns: Any
) -> None:
    values: dict[str, Any] = {
        "id_number": id_number,
        "name": "测试",
        "gender": "M",
        "birth_date": birth,
        "hukou_region": "341602",
        "status": "alive",
        "last_seen_date": TODAY,
    }
    conn.execute(insert(Person).values(**{**values, **columns}))
    if photo:
        conn.execute(insert(Photo).values(id_number=id_number, photo_sha256="ab" * 32))
    bump_versions(conn, [id_number])


def scalar(container: Container, sql: str, **params: Any) -> Any:
    with container.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def record(container: Container, application_id: str) -> dict[str, Any]:
    with container.engine.connect() as conn:
        row = (
            conn.execute(select(applications).where(applications.c.id == application_id))
            .mappings()
            .one()
        )
    return dict(row)


def answered(container: Container, application_id: str) -> dict[str, Any]:
    """The document the application's record answers with (made from its columns)."""
    row = record(container, application_id)
    assert row["document"] is None  # not stored since migration 0017
    return recorded_document(row, container.clock.zone, container.calendar)


def codes(doc: dict[str, Any]) -> list[str]:
    return [r["code"] for r in doc["reasons"]]


def pending(
    container: Container,
    service: ApplicationService,
    applicant: str,
    item: str,
    form: dict[str, Any] | None = None,
    key: str | None = None,
    channel: str = "portal",
) -> Any:
    """An application decided on the facts as cached, waiting to be recorded (as apply makes)."""
    decider, app = service._prepare(item, applicant, form)
    stamp, facts = container.facts.gather_unchecked(app.applicant_id, decider.policy.fact_names)
    return service._decide(channel, decider, app, key, time.perf_counter(), stamp, facts)


def apply_via(
    via: str,
    service: ApplicationService,
    applicant: str,
    item: str,
    form: dict[str, Any] | None = None,
    key: str | None = None,
    channel: str = "portal",
) -> tuple[dict[str, Any], bool]:
    if via == "async":
        return asyncio.run(apply_on_a_loop(service, channel, item, applicant, form, key))
    return service.apply(channel, item, applicant, form, key)


async def apply_on_a_loop(service: ApplicationService, *args: Any) -> tuple[dict[str, Any], bool]:
    """``apply_async`` on a loop of its own, closing what the loop opened (as a worker
    does at shutdown): its Redis client and its registry connection for misses."""
    try:
        return await service.apply_async(*args)
    finally:
        await service.c.aclose_loop_clients()


def issued(container: Container, table: str, person: str) -> int:
    return int(scalar(container, f"SELECT count(*) FROM {table} WHERE id_number = :i", i=person))


def recorded(container: Container, **where: str) -> int:
    column, value = next(iter(where.items()))
    return int(scalar(container, f"SELECT count(*) FROM applications WHERE {column} = :v", v=value))


@contextmanager
def writer_held(container: Container, service: ApplicationService) -> Iterator[None]:
    """While inside, the group-commit writer is stuck on an application of its own; what is
    submitted meanwhile is committed as one group when the block ends."""
    blocker = add_person(container, YOUNG)
    ahead_item = pending(container, service, blocker, "elderly-allowance")
    committer = container.committer
    with write_transaction(container.engine) as conn:  # SQLite: holds the write lock
        if postgres(container):
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:i, 0))"), {"i": blocker}
            )
        ahead = committer.submit(ahead_item)
        deadline = time.monotonic() + 10
        while not writer_waits(container):
            assert time.monotonic() < deadline, "the writer never took the blocked entry"
            time.sleep(0.01)
        yield
    ahead.result(timeout=30)


def writer_waits(container: Container) -> bool:
    if postgres(container):
        waiting = scalar(
            container, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        return bool(waiting)
    if not container.committer._queue.empty():
        return False
    time.sleep(0.2)  # dequeued; the writer is in BEGIN IMMEDIATE, waiting for the lock
    return True


def results(futures: Sequence[Future[Any]]) -> list[Any]:
    return [f.result(timeout=30) for f in futures]


def new_key() -> str:
    return f"key-{secrets.token_hex(6)}"
