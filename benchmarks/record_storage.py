"""PostgreSQL's CPU per decision record inserted, by the table's ``toast_tuple_target``
or (``--compare indexes``) by its indexes.

Makes real records: a fresh PostgreSQL database, a generated registry, and the
applications of the load test's mix decided and recorded by the service itself
(SQLite is not measured: it has no such setting). Then copies those records, in
groups of 50 as the group writer does, into two scratch tables: one with
PostgreSQL's default target (about 2 kB, past which a row's largest values are
compressed) and one with the target migration 0014 gives ``applications``; and
reports the backend's CPU per record for each, read from ``/proc``, and how many
traces were compressed. Alternates the two tables, three rounds each::

    .venv/bin/python benchmarks/record_storage.py

With ``--compare indexes`` both tables have the table's target, one the indexes of
``applications`` (migration 0016) and the other the five it had before::

    .venv/bin/python benchmarks/record_storage.py --compare indexes
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg

from approval_service.loadtest.mix import build_plan, load_pools
from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container
from approval_service.settings import Settings
from data_lookups.importer import import_directory
from data_lookups.synthetic import generate_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_support import cpu_seconds, scratch_database

ROOT = Path(__file__).resolve().parents[1]
GROUP = 50
#: the secondary indexes of ``applications`` before migration 0016, for ``--compare indexes``
INDEXES_BEFORE_0016 = [
    "DROP INDEX IF EXISTS scratch_records_deadline_decided_at_idx",
    "DROP INDEX IF EXISTS scratch_records_business_date_idx",
    "CREATE INDEX ON scratch_records (item, decided_at)",
    "CREATE INDEX ON scratch_records (review_state, deadline)",
    "CREATE INDEX ON scratch_records (applicant_id, item)",
]


def make_records(url: str, people: int, count: int) -> None:
    """``count`` applications of the load test's mix, decided and recorded by the service."""
    container = Container.build(
        Settings(database_url=url, redis_url=None, rules_dir=ROOT / "rules")
    )
    try:
        today = container.clock.today()
        with tempfile.TemporaryDirectory() as folder:
            generate_registry(Path(folder), people, seed=0, as_of=today)
            assert import_directory(container.engine, Path(folder), today=today).ok
            pools = load_pools(Path(folder), today=today)
        plan = build_plan(pools, count, host="x", key="k", run_id="rs", today=today)
        service = ApplicationService(container)
        for request in plan.requests:
            head, body = request.split(b"\r\n\r\n", 1)
            if b"/v1/applications" not in head:
                continue
            app = orjson.loads(body)
            try:
                service.apply("bench", app["item"], app["applicant_id"], app.get("form"))
            except Exception:  # an invalid ID number of the mix: no record, as served
                continue
    finally:
        container.close()


def measure(conn: psycopg.Connection, rows: list[tuple[object, ...]], columns: str,
            target: int | None, round_no: int,
            setup: list[str] | None = None) -> tuple[float, int, int]:  # fmt: skip
    """Backend CPU µs per record copied into a fresh table with this target (and the
    ``setup`` statements run on it), how many of its traces PostgreSQL compressed, and
    the table's size in bytes."""
    conn.execute("DROP TABLE IF EXISTS scratch_records")
    conn.execute("CREATE TABLE scratch_records (LIKE applications INCLUDING ALL)")
    if target is not None:
        conn.execute(f"ALTER TABLE scratch_records SET (toast_tuple_target = {target})")
    for statement in setup or []:
        conn.execute(statement)  # type: ignore[arg-type]
    pid = conn.info.backend_pid
    before = cpu_seconds(pid)
    for start in range(0, len(rows), GROUP):
        statement = f"COPY scratch_records ({columns}) FROM STDIN"
        with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
            for row in rows[start : start + GROUP]:
                fresh = list(row)
                fresh[0] = f"{round_no}{fresh[0]}"[:40]  # the primary key stays unique
                copy.write_row(fresh)
    spent = cpu_seconds(pid) - before
    if setup:  # the old indexes took the place of the new ones
        names = {r[0] for r in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'scratch_records'"
        )}  # fmt: skip
        assert len(names) == 5 and not any("business_date" in n for n in names), names
    compressed, size = conn.execute(
        "SELECT count(*) FILTER (WHERE pg_column_compression(trace) IS NOT NULL), "
        "pg_table_size('scratch_records') FROM scratch_records"
    ).fetchone() or (0, 0)
    return spent / len(rows) * 1e6, int(compressed), int(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument("--applications", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare", choices=["target", "indexes"], default="target")
    args = parser.parse_args()
    database = f"miaopi_records_{os.getpid()}_{secrets.token_hex(3)}"
    with scratch_database(database) as url:
        started = time.perf_counter()
        make_records(url, args.people, args.applications)
        with psycopg.connect(url, autocommit=True) as conn:
            (target,) = conn.execute(
                "SELECT option_value FROM pg_options_to_table((SELECT reloptions FROM "
                "pg_class WHERE relname = 'applications')) WHERE option_name = "
                "'toast_tuple_target'"
            ).fetchone() or (None,)
            names = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = "
                "'applications' ORDER BY ordinal_position"
            )]  # fmt: skip
            rows = conn.execute(
                f"SELECT {', '.join(f'{n}::text' for n in names)} FROM applications"
            ).fetchall()
            made = time.perf_counter() - started
            print(f"{len(rows)} records made in {made:.0f} s, {datetime.now(UTC):%Y-%m-%d %H:%M} "
                  f"UTC; the applications table's target: {target}")  # fmt: skip
            own = int(target) if target else None
            variants: list[tuple[str, int | None, list[str]]] = [
                ("default target", None, []),
                (f"target {own}", own, []),
            ]
            if args.compare == "indexes":
                variants = [("indexes before 0016", own, INDEXES_BEFORE_0016),
                            ("indexes of 0016", own, [])]  # fmt: skip
            for round_no in range(args.rounds):
                for label, option, setup in variants:
                    cpu, compressed, size = measure(
                        conn, rows, ", ".join(names), option, round_no, setup
                    )
                    print(f"  {label:>19}: {cpu:5.1f} µs of backend CPU a record, "
                          f"{compressed} of {len(rows)} traces compressed, "
                          f"{size / len(rows):.0f} bytes a record on disk")  # fmt: skip
            conn.execute("DROP TABLE IF EXISTS scratch_records")


if __name__ == "__main__":
    main()
