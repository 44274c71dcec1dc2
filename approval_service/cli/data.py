"""``miaopi data``: import base-registry files, generate a synthetic registry, warm the cache.

Registered by the main CLI as ``miaopi data``; both commands read
``MIAOPI_DATABASE_URL`` (``import``) through the settings object and create or
migrate the schema first.
"""

from __future__ import annotations

import time
from datetime import date, datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from approval_service.errors import MiaopiError, RegistryUnavailable
from approval_service.settings import Settings
from data_lookups.cache_warming import registry_ids, warm
from data_lookups.database import ensure_schema, make_engine
from data_lookups.fact_cache import RedisFactCache
from data_lookups.importer import import_directory
from data_lookups.synthetic import generate_registry

app = typer.Typer(
    help="Base registries: import files, generate synthetic data, warm the fact cache.",
    no_args_is_help=True,
)
_err = Console(stderr=True)


def _today(settings: Settings) -> date:
    return datetime.now(ZoneInfo(settings.timezone)).date()


@app.command("import")
def import_command(
    directory: Annotated[
        Path,
        typer.Argument(exists=True, file_okay=False, help="folder with the .jsonl files"),
    ],
) -> None:
    """Load every registry file present in DIRECTORY, upserting by each file's key.

    A file with any invalid line is not applied at all; the others are. Every
    problem is listed as file:line: field: problem. Exit code 1 when any file
    had problems, 2 when the database cannot be reached.
    """
    settings = Settings()
    started = time.perf_counter()
    try:
        engine = make_engine(settings.database_url)
        ensure_schema(engine)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            console=_err,
            transient=False,
        ) as progress:
            tasks: dict[str, TaskID] = {}

            def report(file: str, done: int, total: int) -> None:
                if file not in tasks:
                    tasks[file] = progress.add_task(file, total=total)
                progress.update(tasks[file], completed=done)

            result = import_directory(engine, directory, today=_today(settings), progress=report)
    except RegistryUnavailable as error:
        _err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    elapsed = time.perf_counter() - started
    for file in result.files:
        mark = "[green]applied[/green]" if file.applied else "[red]not applied[/red]"
        _err.print(f"{file.file}: {file.rows} valid lines, {mark}")
    problems = result.problems()
    for problem in problems:
        typer.echo(problem, err=True)
    if not result.ok:
        _err.print(f"[red]{len(problems)} problem(s)[/red]; fix them and import again")
        raise typer.Exit(1)
    _err.print(f"imported in {elapsed:.1f} s")


@app.command("generate")
def generate_command(
    directory: Annotated[Path, typer.Argument(file_okay=False, help="folder to write to")],
    people: Annotated[int, typer.Option("--people", min=0, help="number of residents")],
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="business date the registry is generated for (YYYY-MM-DD; default: today in "
            "Asia/Shanghai). The same seed and as-of give the same files byte for byte.",
        ),
    ] = None,
) -> None:
    """Write a synthetic but realistic registry of PEOPLE residents in the import format."""
    settings = Settings()
    try:
        business_date = date.fromisoformat(as_of) if as_of else _today(settings)
    except ValueError as error:
        raise typer.BadParameter(f"{as_of!r} is not a date (use YYYY-MM-DD)") from error
    started = time.perf_counter()
    with _err.status(f"generating {people} residents as of {business_date.isoformat()}"):
        try:
            summary = generate_registry(directory, people, seed=seed, as_of=business_date)
        except (OSError, MiaopiError) as error:
            _err.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from error
    elapsed = time.perf_counter() - started
    for name, rows in summary.rows.items():
        _err.print(f"{name}.jsonl: {rows} lines")
    _err.print(f"written to {directory} in {elapsed:.1f} s (seed {seed}, as of {business_date})")


@app.command("warm")
def warm_command(
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="only the first N residents by ID")
    ] = None,
) -> None:
    """Load every resident's facts into the Redis fact cache (MIAOPI_REDIS_URL)."""
    settings = Settings()
    if not settings.redis_url:
        _err.print(
            "[red]error:[/red] MIAOPI_REDIS_URL is not set: there is no shared cache to warm"
        )
        raise typer.Exit(2)
    engine = make_engine(settings.database_url)
    cache = RedisFactCache(settings.redis_url, prefix=settings.redis_prefix)
    started = time.perf_counter()
    try:
        ensure_schema(engine)
        ids = registry_ids(engine, limit)
        with Progress(
            TextColumn("warming"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(), console=_err, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("warm", total=len(ids))
            written = warm(engine, cache, ids, progress=lambda n: bar.advance(task, n))
    except MiaopiError as error:
        _err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    finally:
        cache.close()
        engine.dispose()
    elapsed = time.perf_counter() - started
    _err.print(f"warmed {written} residents' facts in {elapsed:.1f} s ({written / elapsed:.0f}/s)")
