"""``miaopi review``: the officer's queue and decisions from the command line."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container
from approval_service.service.review import review, review_queue
from approval_service.settings import Settings

app = typer.Typer(help="Referred cases (转人工): the queue, approve, reject.", no_args_is_help=True)
console = Console(highlight=False)
LIGHT = {"green": "[green]● 绿[/]", "yellow": "[yellow]● 黄[/]", "red": "[red]● 红[/]"}


def _service() -> ApplicationService:
    return ApplicationService(Container.build(Settings()))


@app.command("queue")
def queue_command(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Open referred cases, most urgent first, with their supervision light."""
    service = _service()
    try:
        cases = review_queue(service)
    finally:
        service.c.close()
    if as_json:
        typer.echo(orjson.dumps({"cases": cases}).decode())
        return
    table = Table()
    for column in ("application", "item", "applicant", "deadline", "light", "left", "reasons"):
        table.add_column(column)
    for case in cases:
        table.add_row(
            case["application_id"],
            case["item"],
            case["applicant"],
            case["deadline"],
            LIGHT[case["supervision"]],
            str(case["workdays_left"]),
            escape(", ".join(r["code"] for r in case["reasons"])),
        )
    console.print(table)
    console.print(f"{len(cases)} open case(s)")


def _decide(
    application_id: str, decision: str, officer: str, reasons: list[dict[str, str]]
) -> None:
    service = _service()
    try:
        doc = review(service, application_id, decision, officer, reasons)
    finally:
        service.c.close()
    console.print(f"{application_id}: {doc['decision']} by {escape(officer)}")
    for name, value in doc["result"].items():
        console.print(f"  {name} = {escape(str(value))}")
    for reason in doc["reasons"]:
        console.print(f"  {reason['code']}: {escape(reason['message'])}")


@app.command("approve")
def approve_command(
    application_id: Annotated[str, typer.Argument()],
    officer: Annotated[str, typer.Option(help="the reviewing officer")],
) -> None:
    """Approve a referred case: issues the result exactly as an automatic approval would."""
    _decide(application_id, "approved", officer, [])


@app.command("reject")
def reject_command(
    application_id: Annotated[str, typer.Argument()],
    officer: Annotated[str, typer.Option(help="the reviewing officer")],
    reason: Annotated[list[str], typer.Option(help="CODE:message, repeatable")],
) -> None:
    """Reject a referred case with one or more reasons."""
    parsed = []
    for text in reason:
        code, sep, message = text.partition(":")
        if not sep or not code.strip() or not message.strip():
            raise typer.BadParameter(f"{text!r} is not CODE:message", param_hint="--reason")
        parsed.append({"code": code.strip(), "message": message.strip()})
    _decide(application_id, "rejected", officer, parsed)
