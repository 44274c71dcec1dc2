"""``miaopi data import DIR``: load the registry files, each all-or-nothing.

Every file present among the nine is read once, line by line: each line is
validated (:mod:`data_lookups.import_formats`) and, while the file is still
clean, streamed into the database inside one transaction per file:

- PostgreSQL: ``COPY`` into a temporary table, then one
  ``INSERT … ON CONFLICT (key) DO UPDATE`` (unchanged rows are not rewritten);
- SQLite: ``executemany`` of an upsert, in batches.

A file with any invalid line is rolled back entirely and every problem is
reported as ``file:line: field: problem (fix)``; the other files still apply.
On PostgreSQL two files load at a time (one validates in Python while the
server upserts the other); SQLite takes them one after the other.
Each applied file bumps the registry epoch in the same transaction, which makes
every cached fact bundle older than the import unreachable (see
:mod:`data_lookups.fact_cache`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import orjson
import psycopg
from sqlalchemy import Connection, Engine, exc

from approval_service.errors import ImportValidationError
from data_lookups.database import is_postgres, write_transaction
from data_lookups.import_formats import FileFormat, Value, check_line, file_formats

#: ``progress(file, bytes_done, bytes_total)``
ProgressFn = Callable[[str, int, int], None]
MAX_PROBLEMS_PER_FILE = 1000
_BATCH = 10_000


@dataclass
class FileReport:
    file: str
    rows: int = 0
    applied: bool = False
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS_PER_FILE:
            self.problems.append(text)


@dataclass
class ImportReport:
    files: list[FileReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.files) and all(f.applied for f in self.files)

    def problems(self) -> list[str]:
        out: list[str] = []
        for f in self.files:
            out.extend(f.problems)
            hidden = f.problem_count - len(f.problems)
            if hidden > 0:
                out.append(f"{f.file}: … and {hidden} more problems")
        return out

    def raise_for_problems(self) -> None:
        """Raise :class:`ImportValidationError` listing every problem, if there was one."""
        if not self.ok:
            raise ImportValidationError(self.problems())


class _Sink(Protocol):
    def add(self, values: tuple[Value, ...]) -> None: ...
    def apply(self) -> None: ...
    def discard(self) -> None: ...


class _Invalid(Exception):
    """Internal: roll back the file's transaction."""


def import_directory(
    engine: Engine,
    directory: Path,
    *,
    today: date | None = None,
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Import every registry file present in ``directory``; see the module docstring."""
    formats = file_formats(today or date.today())
    report = ImportReport()
    present = [fmt for fmt in formats if (directory / fmt.file).is_file()]
    if not present:
        missing = FileReport(file=str(directory))
        names = ", ".join(f.file for f in formats)
        missing.problem(f"{directory}: no registry files found (expected any of {names})")
        report.files.append(missing)
        return report

    def one(fmt: FileFormat) -> FileReport:
        return _import_file(engine, fmt, directory / fmt.file, progress)

    if not is_postgres(engine):  # SQLite has one writer at a time
        report.files.extend(one(fmt) for fmt in present)
        return report
    # PostgreSQL: two files at a time, so that one file's validation (Python) overlaps
    # the other's upsert (server); the biggest files start first
    largest_first = sorted(present, key=lambda f: -(directory / f.file).stat().st_size)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="import") as pool:
        done = dict(zip(largest_first, pool.map(one, largest_first), strict=True))
    report.files.extend(done[fmt] for fmt in present)
    return report


def _analyze(engine: Engine, table: str) -> None:
    """Fresh planner statistics for a table an import just changed (autovacuum may be off,
    or not yet around to it; without them the first queries can pick poor plans)."""
    with engine.connect() as conn:
        conn.exec_driver_sql(f"ANALYZE {table}")
        conn.commit()


def _import_file(
    engine: Engine, fmt: FileFormat, path: Path, progress: ProgressFn | None
) -> FileReport:
    """One file in one transaction: applied whole, or not at all with its problems."""
    file_report = FileReport(file=fmt.file)
    try:
        with write_transaction(engine) as conn:
            _load_file(conn, fmt, path, file_report, progress)
            conn.exec_driver_sql("UPDATE registry_state SET epoch = epoch + 1 WHERE id = 1")
        file_report.applied = True
        _analyze(engine, fmt.table)
    except _Invalid:
        pass
    except (exc.IntegrityError, sqlite3.IntegrityError) as error:
        constraint = _constraint_name(error)
        file_report.problem(
            f"{fmt.file}: conflicts with records already in the registry ({constraint}); "
            "nothing from this file was applied"
        )
    except (exc.DataError, psycopg.DataError, sqlite3.DataError) as error:
        orig = error.orig if isinstance(error, exc.DataError) else error
        first_line = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
        file_report.problem(
            f"{fmt.file}: the database refused a value ({first_line}); "
            "nothing from this file was applied"
        )
    return file_report


def _constraint_name(error: Exception) -> str:
    orig = error.orig if isinstance(error, exc.IntegrityError) else error
    name = getattr(getattr(orig, "diag", None), "constraint_name", None)
    return str(name) if name else str(orig).splitlines()[0]


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        yield from enumerate(handle, 1)


def _load_file(
    conn: Connection,
    fmt: FileFormat,
    path: Path,
    report: FileReport,
    progress: ProgressFn | None,
) -> None:
    total = path.stat().st_size
    sink: _Sink = _PostgresSink(conn, fmt) if is_postgres(conn) else _SqliteSink(conn, fmt)
    seen: dict[Value, int] = {}
    valid_card_of: dict[Value, int] = {}  # senior cards: holder -> line of their valid card
    cards = fmt.table == "senior_cards"
    holder, status = (fmt.names.index("id_number"), fmt.names.index("status")) if cards else (0, 0)
    done = 0
    clean = True
    try:
        for lineno, raw in _lines(path):
            done += len(raw)
            if progress is not None and lineno % 20_000 == 0:
                progress(fmt.file, done, total)
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark left by some Windows tools
            if not raw.strip():
                continue
            where = f"{fmt.file}:{lineno}"
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                report.problem(f"{where}: not valid JSON ({error}); write one object per line")
                clean = False
                continue
            values, problems = check_line(fmt, obj)
            if values is None:
                for problem in problems:
                    report.problem(f"{where}: {problem}")
                clean = False
                continue
            key = values[0]
            first = seen.setdefault(key, lineno)
            if first != lineno:
                report.problem(
                    f"{where}: {fmt.key}: duplicate of line {first} (one line per {fmt.key})"
                )
                clean = False
                continue
            if cards and values[status] == "valid":
                other = valid_card_of.setdefault(values[holder], lineno)
                if other != lineno:
                    report.problem(
                        f"{where}: status: a second valid card for the same person "
                        f"(line {other}); cancel one of them"
                    )
                    clean = False
                    continue
            report.rows += 1
            if clean:
                sink.add(values)
        if progress is not None:
            progress(fmt.file, total, total)
    except BaseException:
        sink.discard()
        raise
    if not clean:
        sink.discard()
        raise _Invalid
    sink.apply()


def _update_clause(fmt: FileFormat, target: str, excluded: str) -> str:
    rest = [n for n in fmt.names if n != fmt.key]
    sets = ", ".join(f"{n} = {excluded}.{n}" for n in rest)
    if not rest:
        return "DO NOTHING"
    old = ", ".join(f"{target}.{n}" for n in rest)
    new = ", ".join(f"{excluded}.{n}" for n in rest)
    return f"DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})"


def _conflict_target(fmt: FileFormat) -> str:
    if fmt.table == "allowances":  # imported rows only; miaopi-issued rows are separate
        return "(id_number) WHERE source = 'import'"
    return f"({fmt.key})"


class _PostgresSink:
    """COPY into a temporary table while validating; upsert from it at the end."""

    def __init__(self, conn: Connection, fmt: FileFormat) -> None:
        self._conn = conn
        self._fmt = fmt
        cols = ", ".join(fmt.names)
        conn.exec_driver_sql("DROP TABLE IF EXISTS _import")
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE _import ON COMMIT DROP AS SELECT {cols} FROM {fmt.table} "
            "WITH NO DATA"
        )
        raw: Any = conn.connection.driver_connection
        self._cursor = raw.cursor()
        self._copy_cm = self._cursor.copy(f"COPY _import ({cols}) FROM STDIN")
        self._copy = self._copy_cm.__enter__()
        self._buffer: list[str] = []
        self._open = True

    def add(self, values: tuple[Value, ...]) -> None:
        parts: list[str] = []
        for v in values:
            if v is None:
                parts.append("\\N")
            elif v is True:
                parts.append("t")
            elif v is False:
                parts.append("f")
            elif isinstance(v, int):
                parts.append(str(v))
            else:
                parts.append(v.replace("\\", "\\\\") if "\\" in v else v)
        self._buffer.append("\t".join(parts))
        if len(self._buffer) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._copy.write(("\n".join(self._buffer) + "\n").encode())
            self._buffer.clear()

    def apply(self) -> None:
        self._flush()
        self._open = False
        self._copy_cm.__exit__(None, None, None)
        fmt = self._fmt
        cols = ", ".join(fmt.names)
        self._conn.exec_driver_sql(
            f"INSERT INTO {fmt.table} AS t ({cols}) SELECT {cols} FROM _import "
            f"ON CONFLICT {_conflict_target(fmt)} {_update_clause(fmt, 't', 'EXCLUDED')}"
        )

    def discard(self) -> None:
        if self._open:
            self._open = False
            self._buffer.clear()
            error = _Invalid("import file has problems")
            # psycopg sends CopyFail and may re-raise; the transaction's rollback follows
            with contextlib.suppress(Exception):
                self._copy_cm.__exit__(type(error), error, None)


class _SqliteSink:
    """An upsert per row through ``executemany``, in batches."""

    def __init__(self, conn: Connection, fmt: FileFormat) -> None:
        raw: Any = conn.connection.driver_connection
        self._cursor = raw.cursor()
        cols = ", ".join(fmt.names)
        marks = ", ".join("?" for _ in fmt.names)
        self._sql = (
            f"INSERT INTO {fmt.table} AS t ({cols}) VALUES ({marks}) "
            f"ON CONFLICT {_conflict_target(fmt)} {_update_clause(fmt, 't', 'excluded')}"
        )
        self._rows: list[tuple[Value, ...]] = []

    def add(self, values: tuple[Value, ...]) -> None:
        self._rows.append(values)
        if len(self._rows) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._cursor.executemany(self._sql, self._rows)
            self._rows.clear()

    def apply(self) -> None:
        self._flush()

    def discard(self) -> None:
        self._rows.clear()
