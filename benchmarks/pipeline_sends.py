"""The group writer's transaction through psycopg's pipeline or a statement batch (or,
``--compare copy``, a large group's records by ``COPY`` or in the batch): the client's
CPU (the writer thread, which holds the GIL), the backend's, and wall time.

The same statements either way, shaped like a small group written at once
(``group_store.write_at_once``): ``BEGIN``, the people's advisory locks, a check,
``--group`` record inserts of about 2.7 kB each, ``COMMIT``. psycopg's pipeline
sends each statement as it is queued and processes each result in Python;
:class:`data_lookups.statement_batch.StatementBatch` hands them all to libpq, which
sends them with the ``Sync`` in one write. Both prepare their statements. A fresh
database of its own; alternating rounds::

    .venv/bin/python benchmarks/pipeline_sends.py --groups 3000 --group 8 --rounds 3

With ``--compare copy`` a group opens with its locks in one batch, then its records go
by ``COPY`` (two round trips) and the ``COMMIT`` in a second batch, or the records and
the ``COMMIT`` in the second batch, one prepared ``INSERT`` each: where the two cost
the same is where ``group_store.COPY_FROM`` belongs::

    .venv/bin/python benchmarks/pipeline_sends.py --compare copy --groups 300 --group 40
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from data_lookups.statement_batch import StatementBatch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_support import cpu_seconds, scratch_database

LOCK = (
    "SELECT count(pg_advisory_xact_lock(hashtextextended(id, 0))) "
    "FROM unnest(string_to_array(%(ids)s, ',')) AS id"
)
CHECK = "SELECT %(epoch)s::bigint + 1"
INSERT = (
    "INSERT INTO scratch (id, channel, decision, trace, document) "
    "VALUES (%s, %s, %s, %s::json, %s::json)"
)
TRACE = '{"conditions": [' + ",".join(['{"text": "age >= 80", "value": true}'] * 40) + "]}"
DOCUMENT = '{"decision": "approved", "reasons": [], "result": {"note": "' + "x" * 500 + '"}}'

Way = Callable[[psycopg.Connection[Any], int, int, str], None]


def rows(g: int, size: int, tag: str) -> list[tuple[str, ...]]:
    return [(f"{tag}-{g}-{i}", "portal", "approved", TRACE, DOCUMENT) for i in range(size)]


def through_psycopg(conn: psycopg.Connection[Any], g: int, size: int, tag: str) -> None:
    with conn.pipeline(), conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute(LOCK, {"ids": "a,b,c,d"}, prepare=True)
        cur.execute(CHECK, {"epoch": g}, prepare=True)
        cur.executemany(INSERT, rows(g, size, tag))
        cur.execute("COMMIT")


def through_batch(conn: psycopg.Connection[Any], g: int, size: int, tag: str) -> None:
    batch = StatementBatch(conn)
    batch.add("BEGIN", prepare=False)
    batch.add(LOCK, {"ids": "a,b,c,d"})
    batch.add(CHECK, {"epoch": g})
    batch.add_many(INSERT, rows(g, size, tag))
    batch.add("COMMIT", prepare=False)
    batch.run()


def _opened(conn: psycopg.Connection[Any]) -> None:
    batch = StatementBatch(conn)
    batch.add("BEGIN", prepare=False)
    batch.add(LOCK, {"ids": "a,b,c,d"}, prepare=False)  # the long way's are not prepared
    batch.run()


def by_copy(conn: psycopg.Connection[Any], g: int, size: int, tag: str) -> None:
    _opened(conn)
    columns = "id, channel, decision, trace, document"
    with conn.cursor() as cur, cur.copy(f"COPY scratch ({columns}) FROM STDIN") as copy:
        for row in rows(g, size, tag):
            copy.write_row(row)
    batch = StatementBatch(conn)
    batch.add("COMMIT", prepare=False)
    batch.run()


def in_the_batch(conn: psycopg.Connection[Any], g: int, size: int, tag: str) -> None:
    _opened(conn)
    batch = StatementBatch(conn)
    batch.add_many(INSERT, rows(g, size, tag))
    batch.add("COMMIT", prepare=False)
    batch.run()


def measure(url: str, way: Way, groups: int, size: int, tag: str) -> tuple[float, float, float]:
    """Per group, in µs: the client's CPU, the backend's, the wall time."""
    # psycopg prepares on its own connection (its default); the batch only where
    # psycopg does not, as the service's engines are set up (data_lookups.database)
    threshold = 5 if way is through_psycopg else None
    with psycopg.connect(url, autocommit=True, prepare_threshold=threshold) as conn:
        way(conn, -1, size, tag)  # statements prepared before the clock starts
        pid = conn.info.backend_pid
        cpu, backend, wall = time.process_time(), cpu_seconds(pid), time.perf_counter()
        for g in range(groups):
            way(conn, g, size, tag)
        return (
            (time.process_time() - cpu) / groups * 1e6,
            (cpu_seconds(pid) - backend) / groups * 1e6,
            (time.perf_counter() - wall) / groups * 1e6,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=3000)
    parser.add_argument("--group", type=int, default=8, help="records a group")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare", choices=["pipeline", "copy"], default="pipeline")
    args = parser.parse_args()
    ways: tuple[Way, Way] = (
        (through_psycopg, through_batch) if args.compare == "pipeline" else (by_copy, in_the_batch)
    )
    with scratch_database(f"miaopi_pipeline_sends_{secrets.token_hex(4)}") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE scratch (id text PRIMARY KEY, channel text, decision text, "
                "trace json, document json)"
            )
        print(f"{args.groups} groups of {args.group} records, per group:")
        for r in range(args.rounds):
            for way in ways:
                cpu, backend, wall = measure(
                    url, way, args.groups, args.group, f"{way.__name__}{r}"
                )
                print(
                    f"  round {r + 1}  {way.__name__:16s} client {cpu:6.1f} µs  "
                    f"backend {backend:6.1f} µs  wall {wall:6.1f} µs"
                )


if __name__ == "__main__":
    main()
