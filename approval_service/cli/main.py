"""``miaopi``: the Typer app. Kept small: sub-apps and commands live in their own modules.

To add a command group, write ``approval_service/cli/<name>.py`` with a Typer
``app`` and register it below with ``app.add_typer(<name>.app, name="<name>")``.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from approval_service.cli import bench, data, explain, loadtest, notify, review, rules, serving
from approval_service.errors import CacheUnavailable, MiaopiError, RegistryUnavailable

#: errors of the environment (retry later) rather than of the input
UNAVAILABLE_EXIT = 2
INPUT_EXIT = 1


def exit_code(exc: MiaopiError) -> int:
    return (
        UNAVAILABLE_EXIT if isinstance(exc, RegistryUnavailable | CacheUnavailable) else INPUT_EXIT
    )


class MiaopiGroup(TyperGroup):
    """Turns a :class:`MiaopiError` from any command into a message and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click Context
        try:
            return super().invoke(ctx)
        except MiaopiError as exc:
            Console(stderr=True, soft_wrap=True, highlight=False).print(
                f"[bold red]error:[/] {escape(str(exc))}"
            )
            raise typer.Exit(exit_code(exc)) from None


app = typer.Typer(
    name="miaopi",
    cls=MiaopiGroup,
    help="秒批 miaopi: instant approval of zero-material government services.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(rules.app, name="rules")
app.add_typer(bench.app, name="bench")
app.add_typer(data.app, name="data")
app.command("serve")(serving.serve)
app.command("demo")(serving.demo)
app.command("explain")(explain.explain_command)
app.command("loadtest")(loadtest.loadtest_command)
app.command("notify")(notify.notify_command)
app.add_typer(review.app, name="review")
