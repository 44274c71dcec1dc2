"""The floor under an idle application's latency on this machine: its round trips, alone.

An idle application waits, in order, for its HTTP request, one Redis read, and one
PostgreSQL round trip that commits its record durably (a WAL flush), then for its
answer to reach the client. On a virtual machine a process that sleeps is slow to
wake, so each round trip costs more when it comes after a pause than back to back.
This measures the two round trips miaopi cannot do without, both ways, on their own:

- ``redis read``: ``HGETALL`` of a small hash (what the baseline app does too);
- ``pg read``: one statement batch (``data_lookups.statement_batch``) with a
  ``SELECT`` and a ``COMMIT``, which writes nothing;
- ``pg durable write``: the same batch with an ``INSERT`` of a 2.5 kB row, so its
  ``COMMIT`` flushes the WAL, as a group of one does.

Run::

    .venv/bin/python benchmarks/idle_floor.py --requests 200 --pause-ms 50

It creates a database of its own (``miaopi_floor_<pid>``) and a Redis key under
``miaopi_floor_<pid>:``, and removes both. Prints p50/p90 in ms for each, back to back
and with ``--pause-ms`` between requests (as an idle service sees them), and with
``--json`` the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis

from data_lookups.statement_batch import StatementBatch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_support import scratch_database

REDIS_URL = "redis://127.0.0.1:6379/0"
ROW = "x" * 2500  # about one decision record


def timed(call: Callable[[], object], requests: int, pause_s: float) -> dict[str, float]:
    call()  # connections open, statements prepared
    took: list[float] = []
    for _ in range(requests):
        if pause_s:
            time.sleep(pause_s)
        started = time.perf_counter_ns()
        call()
        took.append((time.perf_counter_ns() - started) / 1e6)
    took.sort()
    return {
        "p50": round(statistics.median(took), 3),
        "p90": round(took[int(len(took) * 0.9)], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--pause-ms", type=float, default=50.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.requests < 10:
        parser.error("--requests: at least 10, for a median and a p90")

    key = f"miaopi_floor_{os.getpid()}:hash"
    cache = redis.Redis.from_url(REDIS_URL)
    try:
        cache.hset(key, mapping={"status": "alive", "hukou_region": "341602"})
        with (
            scratch_database(f"miaopi_floor_{os.getpid()}") as url,
            psycopg.connect(url, prepare_threshold=None) as conn,
        ):
            conn.execute("CREATE TABLE floor_rows (id bigserial PRIMARY KEY, body text)")
            conn.commit()

            def pg(write: bool) -> Callable[[], None]:
                def run() -> None:
                    batch = StatementBatch(conn)
                    if write:
                        batch.add("INSERT INTO floor_rows (body) VALUES (%s)", [ROW])
                    else:
                        batch.add("SELECT %s::text", ["x"])
                    batch.add("COMMIT", prepare=False)
                    batch.run()

                return run

            probes: dict[str, Callable[[], object]] = {
                "redis read": lambda: cache.hgetall(key),
                "pg read": pg(write=False),
                "pg durable write": pg(write=True),
            }
            figures = {
                name: {
                    "back_to_back": timed(call, args.requests, 0.0),
                    "after_a_pause": timed(call, args.requests, args.pause_ms / 1000),
                }
                for name, call in probes.items()
            }
    finally:
        cache.delete(key)
        cache.close()
    if args.json:
        print(json.dumps({"pause_ms": args.pause_ms, "requests": args.requests, **figures}))
        return
    print(f"{'ms':18}{'back to back p50/p90':>24}{f'after {args.pause_ms:g} ms p50/p90':>26}")
    for name, ways in figures.items():
        hot, idle = ways["back_to_back"], ways["after_a_pause"]
        print(
            f"{name:18}{hot['p50']:>14.3f} / {hot['p90']:<7.3f}{idle['p50']:>16.3f} / "
            f"{idle['p90']:<7.3f}"
        )


if __name__ == "__main__":
    main()
