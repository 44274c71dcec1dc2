"""``miaopi bench engine``: decisions per second, every policy on every backend, one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from approval_service.authoring.run import Deciders
from approval_service.authoring.suite import deployment_of, load_suite
from approval_service.bench.engine import BenchError, run_bench, workload_for
from approval_service.cli.rules import RulesDir, check_backends
from approval_service.settings import Settings

app = typer.Typer(help="Measurements: engine throughput.", no_args_is_help=True)


@app.command("engine")
def engine_command(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
    seconds: Annotated[
        float, typer.Option("--seconds", min=0.0, help="measuring time per policy and backend")
    ] = 1.0,
    backend: Annotated[
        list[str] | None,
        typer.Option("--backend", "-b", help="measure only this backend (repeatable)"),
    ] = None,
    rules_dir: RulesDir = None,
) -> None:
    """Decisions per second for every policy on every backend, on the same facts.

    Facts: per policy, the first approved and the first rejected case of
    rules/cases/<item>.yaml, decided alternately without trace.
    """
    backends = check_backends(backend)
    settings = Settings()
    suite = load_suite(rules_dir or settings.rules_dir, deployment=deployment_of(settings))
    if suite.problems:
        raise BenchError("case files do not load:\n" + "\n".join(map(str, suite.problems)))
    deciders = Deciders.build(suite.policies, backends)
    if deciders.broken:
        raise BenchError("\n".join(deciders.broken.values()))
    workloads = {item: workload_for(item, suite.cases) for item in sorted(suite.policies)}
    status = Console(stderr=True)
    with status.status("measuring…") as spinner:
        report = run_bench(
            deciders.by_backend,
            workloads,
            seconds,
            progress=lambda item, name: spinner.update(f"measuring {item} on {name}…"),
        )
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False))
        return
    _table(report, list(deciders.by_backend), Path(str(rules_dir or settings.rules_dir)))


def _table(report: dict[str, object], backends: list[str], rules: Path) -> None:
    policies = report["policies"]
    ratios = report["ratio_compiled_over_durable"]
    assert isinstance(policies, dict) and isinstance(ratios, dict)
    table = Table(title=f"decisions per second ({rules}, single thread, no trace)")
    table.add_column("policy", no_wrap=True, min_width=max(map(len, policies)))
    for name in backends:
        table.add_column(name, justify="right", no_wrap=True)
    if "compiled" in backends and "durable" in backends:
        table.add_column("compiled ÷ durable", justify="right", no_wrap=True)
    for item, rates in policies.items():
        row = [item, *(f"{rates[name]:,.0f}" for name in backends)]
        if item in ratios:
            row.append(f"{ratios[item]:,.1f}×")
        table.add_row(*row)
    out = Console(highlight=False)
    out.width = max(out.width, 110)  # a pipe gets 80 columns, too few for the names
    out.print(table)
    out.print(f"facts: first approved and first rejected case of each {rules}/cases/<item>.yaml")
