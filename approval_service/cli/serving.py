"""``miaopi serve`` and ``miaopi demo``: the API under uvicorn."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from sqlalchemy import text

from approval_service.api.http_protocol import OneWriteHttpToolsProtocol
from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container
from approval_service.service.metrics import MULTIPROC_ENV
from approval_service.settings import Settings
from data_lookups.importer import import_directory
from data_lookups.synthetic import generate_registry

console = Console(highlight=False)


def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
) -> None:
    """Serve the API with the configuration from MIAOPI_* variables."""
    settings = Settings()
    container = Container.build(settings)  # fail fast: policies load, schema is migrated
    container.close()
    if not settings.channel_keys():
        console.print(
            "[yellow]warning:[/] MIAOPI_API_KEYS is empty: every /v1 call will be refused"
        )
    with _metrics_across(workers):
        uvicorn.run(
            "approval_service.api.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,
            log_level="warning",
            proxy_headers=False,
            http=OneWriteHttpToolsProtocol,
        )


@contextmanager
def _metrics_across(workers: int) -> Iterator[None]:
    """Several workers count into one folder (prometheus_client's multiprocess mode), so
    ``/metrics`` on any of them gives the service's totals; an operator's own
    ``PROMETHEUS_MULTIPROC_DIR`` is used as it is. The workers inherit the variable."""
    given = os.environ.get(MULTIPROC_ENV)
    if given and any(Path(given).glob("*.db")):
        console.print(
            f"[yellow]warning:[/] {MULTIPROC_ENV} ({given}) holds values of an earlier run, "
            "which /metrics adds in: empty it before each start"
        )
    if workers == 1 or given:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="miaopi-metrics-") as folder:
        os.environ[MULTIPROC_ENV] = folder
        try:
            yield
        finally:
            del os.environ[MULTIPROC_ENV]


def _ensure_registry(container: Container, people: int, as_of: date) -> None:
    with container.engine.connect() as conn:
        present = conn.execute(text("SELECT count(*) FROM population")).scalar_one()
    if present:
        console.print(f"registry: {present} residents already in the database")
        return
    folder = Path("var") / "demo-registry"
    folder.mkdir(parents=True, exist_ok=True)
    with console.status(f"generating {people} synthetic residents…"):
        generate_registry(folder, people, seed=2026, as_of=as_of)
    with console.status("importing them…"):
        report = import_directory(container.engine, folder, today=as_of)
    if not all(f.applied for f in report.files):
        raise typer.BadParameter(f"demo registry did not import: {report}")
    console.print(f"registry: {people} synthetic residents imported from {folder}")


def _samples(container: Container) -> dict[str, dict[str, Any]]:
    """An approval, a rejection with several reasons and a referral, found by prechecking."""
    service = ApplicationService(container)
    with container.engine.connect() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                text("SELECT id_number FROM population ORDER BY birth_date LIMIT 3000")
            )
        ]
    wanted: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
        "approval": ("senior-card-new", lambda d: d["decision"] == "approved"),
        "rejection": (
            "elderly-allowance",
            lambda d: d["decision"] == "rejected" and len(d["reasons"]) >= 2,
        ),
        "referral": ("elderly-allowance-certification", lambda d: d["decision"] == "referred"),
    }
    found: dict[str, dict[str, Any]] = {}
    for name, (item, wanted_doc) in wanted.items():
        form = (
            {"mailing_address": "亳州市谯城区人民中路1号"}
            if item.startswith("senior-card")
            else None
        )
        for applicant in ids:
            if wanted_doc(service.precheck(item, applicant, form)):
                found[name] = {
                    "item": item,
                    "applicant_id": applicant,
                    **({"form": form} if form else {}),
                }
                break
    return found


def demo(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8000,
    people: Annotated[int, typer.Option(min=100, help="synthetic residents to create")] = 5000,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="set up and print, but do not serve")
    ] = False,
) -> None:
    """The embedded default: a SQLite registry of synthetic residents, a key, sample requests."""
    settings = Settings()
    container = Container.build(settings)
    _ensure_registry(container, people, container.clock.today())
    key = f"demo-{secrets.token_urlsafe(12)}"
    keys = {**settings.channel_keys(), key: "demo"}
    url = f"http://127.0.0.1:{port}"
    console.print(f"\n[bold]demo API key[/] (channel demo): {key}\n")
    for name, body in _samples(container).items():
        command = (
            f"curl -s -X POST {url}/v1/applications -H 'X-API-Key: {key}' "
            "-H 'Content-Type: application/json' "
            f"-d {shlex.quote(json.dumps(body, ensure_ascii=False))}"
        )
        console.print(f"[bold]# {name}[/]\n{command}\n", soft_wrap=True)
    console.print(
        f"[bold]# items[/]\ncurl -s {url}/v1/items -H 'X-API-Key: {key}'\n", soft_wrap=True
    )
    console.print(f"OpenAPI documentation: {url}/docs")
    if no_serve:
        container.close()
        return
    from approval_service.api.main import create_app

    console.print(f"serving on {url} (Ctrl-C stops)")
    uvicorn.run(
        create_app(container, api_keys=keys),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        http=OneWriteHttpToolsProtocol,
    )
    container.close()
