"""PostgreSQL's CPU and disk per outbox message, keyed by its dedup key (migration 0018) or,
as before, by an ``id`` of its own with the dedup key unique beside it.

A fresh PostgreSQL database at the schema's head; messages made as decisions make
them (``notifications.outbox_row`` for time-ordered application ids, 5 a millisecond,
the text of an issued card; before 0018 each had a time-ordered id too); inserted in groups of
50, one transaction each, as the group writer does, into a scratch table of each
layout in turn: ``LIKE outbox INCLUDING ALL`` (today's) and the layout before 0018
(an ``id`` primary key, the dedup key's unique constraint, the due messages' index).
Reports the backend's CPU per message (from ``/proc``) and the table's size with its
indexes per message, each round and the medians::

    .venv/bin/python benchmarks/outbox_keys.py [--messages 60000] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast
from zoneinfo import ZoneInfo

import psycopg

from approval_service.service.identifiers import time_ordered_id
from approval_service.service.notifications import outbox_row
from data_lookups.database import ensure_schema, make_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_support import cpu_seconds, scratch_database

GROUP = 50
TEXT = (
    "【亳州市政务服务】您申请的老年人优待证办理已办结，卡号AH341600001234，将邮寄至您填写的地址。"
)
BEFORE_0018 = [
    "CREATE TABLE scratch_outbox (LIKE outbox INCLUDING DEFAULTS)",
    "ALTER TABLE scratch_outbox ADD COLUMN id varchar(40) PRIMARY KEY",
    "ALTER TABLE scratch_outbox ADD UNIQUE (dedup_key)",
    "CREATE INDEX ON scratch_outbox (sent_at, next_attempt_at)",
]
SINCE_0018 = ["CREATE TABLE scratch_outbox (LIKE outbox INCLUDING ALL)"]
LAYOUTS = {"id and dedup key": BEFORE_0018, "dedup key": SINCE_0018}


#: messages a millisecond, as a saturated service makes them (about 5,000/s)
PER_MILLISECOND = 5


def messages(count: int) -> list[dict[str, object]]:
    """Messages as decisions make them: each application's id time-ordered (its dedup key
    is ``<application id>:decided``), the moments moving on, so that keys arrive in the
    order the service's do (at an index's right-hand end, not at random)."""
    start = datetime.now(ZoneInfo("Asia/Shanghai"))
    made = []
    for n in range(count):
        now = start + timedelta(milliseconds=n // PER_MILLISECOND)
        application_id = time_ordered_id(int(now.timestamp() * 1000))
        made.append(
            outbox_row(
                application_id=application_id,
                event="decided",
                recipient_id="341602194004040012",
                text=TEXT,
                now=now,
            )
        )
    return made


def _millis(moment: object) -> int:
    assert isinstance(moment, datetime)
    return int(moment.timestamp() * 1000)


def measure(
    conn: psycopg.Connection[tuple[object, ...]], setup: list[str], rows: list[dict[str, object]]
) -> tuple[float, float]:
    """(backend CPU µs, bytes with indexes) per message inserted into a fresh table."""
    conn.execute("DROP TABLE IF EXISTS scratch_outbox")
    for statement in setup:
        conn.execute(statement)
    if setup is BEFORE_0018:  # the id each message had before 0018: time-ordered too
        rows = [{"id": time_ordered_id(_millis(row["created_at"])), **row} for row in rows]
    columns = list(rows[0])
    statement = (
        f"INSERT INTO scratch_outbox ({', '.join(columns)}) "
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    values = [[row[c] for c in columns] for row in rows]
    pid = conn.info.backend_pid
    before = cpu_seconds(pid)
    for start in range(0, len(values), GROUP):
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(statement, values[start : start + GROUP])
    spent = cpu_seconds(pid) - before
    (size,) = conn.execute("SELECT pg_total_relation_size('scratch_outbox')::int").fetchone() or (
        0,
    )
    conn.execute("DROP TABLE scratch_outbox")
    return spent / len(rows) * 1e6, cast(int, size) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.messages < GROUP or args.rounds < 1:
        parser.error(f"--messages: at least {GROUP}; --rounds: at least 1")
    figures: dict[str, dict[str, list[float]]] = {
        name: {"cpu_us": [], "bytes": []} for name in LAYOUTS
    }
    with scratch_database(f"miaopi_outbox_{os.getpid()}_{secrets.token_hex(3)}") as url:
        engine = make_engine(url)
        ensure_schema(engine)
        engine.dispose()
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(args.rounds):
                for name, setup in LAYOUTS.items():
                    cpu, size = measure(conn, setup, messages(args.messages))
                    figures[name]["cpu_us"].append(cpu)
                    figures[name]["bytes"].append(size)
                    if not args.json:
                        print(f"  {name:>16}: {cpu:5.1f} µs of backend CPU a message, "
                              f"{size:4.0f} bytes a message with its indexes")  # fmt: skip
    medians = {
        name: {what: statistics.median(values) for what, values in got.items()}
        for name, got in figures.items()
    }
    if args.json:
        print(json.dumps({"messages": args.messages, "rounds": figures, "medians": medians}))
        return
    for name, got in medians.items():
        print(f"median, {name:>16}: {got['cpu_us']:5.1f} µs, {got['bytes']:4.0f} bytes")


if __name__ == "__main__":
    main()
