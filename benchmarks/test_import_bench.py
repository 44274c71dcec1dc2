"""Import and generation speed at a size CI can afford (the million-row run is import_scale.py)."""

from __future__ import annotations

import itertools
from datetime import date
from pathlib import Path
from typing import Any

from data_lookups.database import ensure_schema, make_engine
from data_lookups.importer import import_directory
from data_lookups.synthetic import generate_registry

AS_OF = date(2026, 11, 23)


def test_generate_20k(benchmark: Any, tmp_path: Path) -> None:
    summary = generate_registry(tmp_path / "first", 20_000, seed=3, as_of=AS_OF)
    assert summary.rows["population"] == 20_000
    benchmark.pedantic(
        lambda: generate_registry(tmp_path / "again", 20_000, seed=3, as_of=AS_OF),
        rounds=3,
        iterations=1,
    )


def test_import_sqlite_10k(benchmark: Any, tmp_path: Path) -> None:
    """A 10,000-resident registry into a fresh SQLite file (the embedded default)."""
    generate_registry(tmp_path / "reg", 10_000, seed=3, as_of=AS_OF)
    counter = itertools.count()

    def run() -> None:
        engine = make_engine(f"sqlite:///{tmp_path}/db{next(counter)}.sqlite3")
        ensure_schema(engine)
        assert import_directory(engine, tmp_path / "reg", today=AS_OF).ok
        engine.dispose()

    benchmark.pedantic(run, rounds=3, iterations=1)
