"""Scale check: generate N residents (default one million) and import them into a fresh database.

Run as a script (not collected by pytest)::

    .venv/bin/python benchmarks/import_scale.py [--people 1000000] [--sqlite]

It creates a scratch PostgreSQL database on the test server
(``MIAOPI_TEST_PG_ADMIN``, default ``postgresql://postgres@127.0.0.1:5432/postgres``),
times ``generate`` and ``import`` (a first import into empty tables, then a
re-import of the same files, which finds every row unchanged), then gathers every
fact for 2,000 residents drawn at random, straight from the database (no cache:
the cold path), prints p50/p99 and drops the database. ``--sqlite`` imports into a
temporary SQLite file instead.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import orjson

from data_lookups.database import ensure_schema, make_engine
from data_lookups.importer import import_directory
from data_lookups.synthetic import generate_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_support import scratch_database

AS_OF = date(2026, 11, 23)


def _timed_import(url: str, directory: Path, label: str) -> None:
    engine = make_engine(url)
    ensure_schema(engine)
    for attempt in ("first import", "re-import"):
        started = time.perf_counter()
        report = import_directory(engine, directory, today=AS_OF)
        elapsed = time.perf_counter() - started
        if not report.ok:
            print("\n".join(report.problems()[:20]), file=sys.stderr)
            raise SystemExit(1)
        rows = sum(f.rows for f in report.files)
        print(f"{label} {attempt}: {elapsed:6.1f} s for {rows} lines in {len(report.files)} files")
    engine.dispose()


def _timed_gathers(url: str, directory: Path, samples: int = 2000) -> None:
    import random

    from data_lookups.facts import ALL_FACTS, SqlFactSource

    with (directory / "population.jsonl").open("rb") as lines:
        ids = [orjson.loads(line)["id_number"] for line in lines]
    chosen = random.Random(7).sample(ids, min(samples, len(ids)))
    engine = make_engine(url)
    source = SqlFactSource(engine)
    assert source.gather(chosen[0], ALL_FACTS)["person"] is not None
    times = []
    for id_number in chosen:
        started = time.perf_counter()
        source.gather(id_number, ALL_FACTS)
        times.append((time.perf_counter() - started) * 1e3)
    times.sort()
    p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99) - 1]
    print(
        f"cold gather (all facts, {len(times)} random residents): "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sqlite", action="store_true", help="import into SQLite instead")
    parser.add_argument(
        "--only", default=None, help="import only these files, like population (comma-separated)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="miaopi-scale-") as scratch:
        directory = Path(scratch) / "registry"
        started = time.perf_counter()
        summary = generate_registry(directory, args.people, seed=args.seed, as_of=AS_OF)
        elapsed = time.perf_counter() - started
        population_rows = summary.rows["population"]
        print(
            f"generate: {elapsed:6.1f} s for {args.people} people "
            f"({sum(summary.rows.values())} lines, {population_rows} population rows)"
        )
        if args.only:
            keep = {f"{name.strip()}.jsonl" for name in args.only.split(",")}
            for path in directory.iterdir():
                if path.name not in keep:
                    path.unlink()
        if args.sqlite:
            _timed_import(f"sqlite:///{scratch}/registry.sqlite3", directory, "sqlite")
            return
        name = f"miaopi_scale_{secrets.token_hex(4)}"
        with scratch_database(name) as url:
            _timed_import(url, directory, "postgresql")
            if not args.only:
                _timed_gathers(url, directory)


if __name__ == "__main__":
    main()
