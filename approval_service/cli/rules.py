"""``miaopi rules``: run the authors' test cases, lint the rules folder, show a policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from approval_service.authoring.lint import lint_folder
from approval_service.authoring.run import Deciders, Outcome, run_cases
from approval_service.authoring.show import summary
from approval_service.authoring.suite import CASES_FOLDER, deployment_of, load_suite
from approval_service.engine.backends import BACKENDS
from approval_service.errors import UnknownItem
from approval_service.policy.loader import load_policy_folder
from approval_service.policy.typecheck import did_you_mean
from approval_service.settings import Settings

app = typer.Typer(
    help="Policy authoring: test cases, lint, readable summaries.", no_args_is_help=True
)

RulesDir = Annotated[
    Path | None,
    typer.Option(
        "--rules-dir",
        help="folder of policy files [default: MIAOPI_RULES_DIR or rules/]",
        file_okay=False,
    ),
]


def _console() -> Console:
    return Console(soft_wrap=True, highlight=False)


def check_backends(names: list[str] | None) -> list[str]:
    """The backends asked for (default: all), each one known."""
    for name in names or []:
        if name not in BACKENDS:
            hint = did_you_mean(name, list(BACKENDS)) or f"backends: {', '.join(BACKENDS)}"
            raise typer.BadParameter(f"unknown backend {name!r}; {hint}", param_hint="--backend")
    return list(dict.fromkeys(names)) if names else list(BACKENDS)


@app.command("test")
def test_command(
    path: Annotated[
        Path | None,
        typer.Argument(help="a case file or a folder of them [default: <rules-dir>/cases]"),
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option("--backend", "-b", help="run only on this backend (repeatable)"),
    ] = None,
    rules_dir: RulesDir = None,
) -> None:
    """Run every author case on every engine backend; exit 1 on any failure or bad case file."""
    backends = check_backends(backend)
    settings = Settings()
    folder = rules_dir or settings.rules_dir
    suite = load_suite(folder, path or folder / CASES_FOLDER, deployment_of(settings))
    items = {f.item for f in suite.files}
    deciders = Deciders.build({i: p for i, p in suite.policies.items() if i in items}, backends)
    out = _console()
    working = ", ".join(deciders.by_backend) or "none"
    out.print(
        f"[bold]rules test[/]: {len(suite.cases)} cases of {len(suite.files)} items "
        f"in {escape(str(path or folder / CASES_FOLDER))}, backends: {working}"
    )
    passed = failed = 0
    failures: list[Outcome] = []
    for case_file in suite.files:  # one line per item as it finishes
        outcomes = run_cases(case_file.cases, deciders)
        bad = {(o.case.file, o.case.line) for o in outcomes if not o.passed}
        failures += [o for o in outcomes if not o.passed]
        passed += len(case_file.cases) - len(bad)
        failed += len(bad)
        if bad:
            out.print(
                f"[red]✗ {case_file.item}[/]  {len(case_file.cases) - len(bad)} passed, "
                f"[red]{len(bad)} failed[/]"
            )
        else:
            out.print(f"[green]✓ {case_file.item}[/]  {len(case_file.cases)} passed")
    if failures:
        out.print()
    for lines, group in _grouped(failures):
        first = group[0].case
        names = ", ".join(o.backend for o in group)
        out.print(
            f"[bold red]FAILED[/] {escape(first.name)}  [cyan]{escape(first.where)}[/]  "
            + escape(f"[{names}]"),
            markup=True,
        )
        for line in lines:
            out.print(f"    {escape(line)}")
    errors = [str(p) for p in suite.problems] + list(deciders.broken.values())
    if errors:
        out.print()
    for error in errors:
        out.print(f"[bold red]ERROR[/] {escape(error)}")
    if not suite.files and not suite.problems:
        errors.append("no case files")
        out.print(f"[bold red]ERROR[/] no case files in {escape(str(path or folder))}")
    tail = f", {len(errors)} error{'s' if len(errors) != 1 else ''}" if errors else ""
    colour = "red" if failed or errors else "green"
    out.print(f"[{colour}]{passed} passed, {failed} failed{tail}[/]")
    if failed or errors:
        raise typer.Exit(1)


def _grouped(failures: list[Outcome]) -> list[tuple[list[str], list[Outcome]]]:
    """Failures of one case with the same differences on several backends, shown once."""
    groups: dict[tuple[str, int, tuple[str, ...]], list[Outcome]] = {}
    for outcome in failures:
        lines = tuple(outcome.describe().splitlines()[1:])
        groups.setdefault((outcome.case.file, outcome.case.line, lines), []).append(outcome)
    return [(list(key[2]), group) for key, group in groups.items()]


@app.command("lint")
def lint_command(
    path: Annotated[
        Path | None,
        typer.Argument(help="folder of policy files [default: MIAOPI_RULES_DIR or rules/]"),
    ] = None,
) -> None:
    """Load every policy and check it against the registry catalogue and its test cases."""
    settings = Settings()
    folder = path or settings.rules_dir
    report = lint_folder(folder, deployment_of(settings))
    out = _console()
    for finding in report.findings:
        out.print(f"[bold red]error[/] {escape(str(finding))}")
    count = len(report.findings)
    colour = "red" if count else "green"
    out.print(
        f"[{colour}]{report.policies} policies, {report.cases} cases, "
        f"{count} error{'s' if count != 1 else ''}[/]"
    )
    if count:
        raise typer.Exit(1)


@app.command("show")
def show_command(
    item: Annotated[str, typer.Argument(help="the item id, like elderly-allowance")],
    rules_dir: RulesDir = None,
) -> None:
    """Print a policy as a readable Chinese summary."""
    settings = Settings()
    policies = load_policy_folder(rules_dir or settings.rules_dir, deployment_of(settings))
    if item not in policies:
        hint = did_you_mean(item, sorted(policies)) or f"items: {', '.join(sorted(policies))}"
        raise UnknownItem(f"no policy has item {item!r}; {hint}", field="item")
    _console().print(escape(summary(policies[item])))
