"""``miaopi explain``: every condition with the values it read, or a stored decision replayed."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from approval_service.service.container import Container
from approval_service.service.explaining import explain, replay
from approval_service.settings import Settings

OUTCOME = {
    "passed": "[green]✓ 满足[/]",
    "failed": "[red]✗ 不满足[/]",
    "skipped": "[dim]– 未评估[/]",
}
DECISION = {
    "approved": "[green]批准 approved[/]",
    "rejected": "[red]驳回 rejected[/]",
    "referred": "[yellow]转人工 referred[/]",
}


def _as_of(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date; write YYYY-MM-DD", param_hint="--as-of"
        ) from None


def _values(values: dict[str, Any]) -> str:
    return "\n".join(f"{escape(k)} = {escape(str(v))}" for k, v in values.items())


def _print_trace(console: Console, trace: list[dict[str, Any]]) -> None:
    table = Table(show_lines=True)
    for column in ("条件 code", "要求 require", "结果", "不满足时", "读取的值 values"):
        table.add_column(column)
    for entry in trace:
        values = entry["values"] or {"absent": ", ".join(entry.get("absent", []))}
        table.add_row(
            entry["code"],
            escape(entry["require"]),
            OUTCOME[entry["outcome"]],
            "驳回" if entry["on_fail"] == "reject" else "转人工",
            _values(values),
        )
    console.print(table)


def _print_decision(console: Console, doc: dict[str, Any]) -> None:
    console.print(f"决定: {DECISION[doc['decision']]}")
    for reason in doc["reasons"]:
        console.print(f"  {reason['code']}: {escape(reason['message'])}")
    for name, value in doc["result"].items():
        console.print(f"  {name} = {escape(str(value))}")


def explain_command(
    item: Annotated[str | None, typer.Argument(help="item id, e.g. elderly-allowance")] = None,
    id_number: Annotated[str | None, typer.Argument(help="the applicant's ID number")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="business date YYYY-MM-DD (default today)")
    ] = None,
    application: Annotated[
        str | None, typer.Option("--application", help="replay a stored decision")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
) -> None:
    """An application's decision with every condition and the values it read; issues nothing."""
    if application is None and (item is None or id_number is None):
        raise typer.BadParameter("give ITEM and ID_NUMBER, or --application APPLICATION_ID")
    container = Container.build(Settings())
    try:
        doc = (
            replay(container, application)
            if application
            else explain(container, item or "", id_number or "", _as_of(as_of))
        )
    finally:
        container.close()
    if as_json:
        typer.echo(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS).decode())
        return
    console = Console(highlight=False)
    if application:
        console.print(
            f"申请 {doc['application_id']} · {doc['item']} · 办理日期 {doc['as_of']} · "
            f"政策版本 {doc['policy']['version']} ({doc['policy']['sha256'][:12]})"
        )
        _print_trace(console, doc["trace"])
        _print_decision(console, {**doc["replayed"]})
        console.print(
            "按原政策、原数据重放: "
            + ("[green]与记录一致[/]" if doc["reproduced"] else "[red]与记录不一致[/]")
        )
        if "today" in doc:
            today = doc["today"]
            same = "[green]相同[/]" if today["same_decision"] else "[yellow]不同[/]"
            console.print(
                f"按现行政策 {today['policy']['version']} 与当前数据（{today['as_of']}）: "
                f"{DECISION[today['decision']]}，与原决定{same}"
            )
        return
    console.print(f"{doc['item']} · 办理日期 {doc['as_of']} · 政策版本 {doc['policy']['version']}")
    _print_trace(console, doc["trace"])
    _print_decision(console, doc)
