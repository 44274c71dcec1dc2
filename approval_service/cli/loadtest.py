"""``miaopi loadtest``: drive a running service at a fixed arrival rate (open loop).

Registered by the main CLI as ``miaopi loadtest``; the engine is
:mod:`approval_service.loadtest`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from approval_service.loadtest import client, report, run_result
from approval_service.loadtest.mix import Pools, build_plan, load_pools
from approval_service.loadtest.target import Target, UnsafeTarget, loopback_target

#: the largest run pre-built in memory (about 350 bytes a request)
MAX_REQUESTS = 5_000_000
#: the exit status of a run stopped by Ctrl-C, after its report is written (128 + SIGINT)
INTERRUPTED = 130
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def default_key() -> str | None:
    """MIAOPI_LOADTEST_KEY, else the key of the first ``channel:key`` in MIAOPI_API_KEYS."""
    key = os.environ.get("MIAOPI_LOADTEST_KEY")
    if key:
        return key
    for pair in os.environ.get("MIAOPI_API_KEYS", "").split(","):
        _, sep, value = pair.strip().partition(":")
        if sep and value:
            return value
    return None


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def loadtest_command(
    url: Annotated[str, typer.Option(help="base URL of the service (loopback only)")],
    rate: Annotated[float, typer.Option(min=0.1, help="applications per second to send")],
    duration: Annotated[float, typer.Option(min=0.1, help="seconds of scheduled arrivals")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
    registry: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="registry folder (`miaopi data generate` output) to draw applicants from; "
            "without it every applicant is a made-up ID number",
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(help="API key (default: MIAOPI_LOADTEST_KEY, else first of MIAOPI_API_KEYS)"),
    ] = None,
    connections: Annotated[int, typer.Option(min=1, help="keep-alive connections at most")] = 256,
    out: Annotated[Path, typer.Option(help="folder for the JSON report and the PNG")] = Path(
        "var/loadtest"
    ),
    precheck_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of requests sent to /v1/precheck")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="seed of the mix (same seed, same applicants)")] = 0,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds before a request fails")] = 10.0,
    drain: Annotated[
        float, typer.Option(min=0.0, help="seconds to wait for answers after the schedule")
    ] = 10.0,
    png: Annotated[bool, typer.Option(help="also write the latency PNG")] = True,
) -> None:
    """Send a realistic mix of applications at RATE per second for DURATION seconds.

    Open loop: request i is due at i/RATE whether or not earlier ones were answered,
    and its latency counts from that moment. Reports throughput, errors by kind,
    latency percentiles (HDR histogram), outcomes and the generator's own CPU and
    send lag. Only loopback URLs are accepted (exit 2 otherwise). Ctrl-C stops the
    schedule and reports the requests due until then (exit 130); a second Ctrl-C, or a
    first once the schedule is done, stops waiting for their answers.
    """
    try:
        target = loopback_target(url)
    except UnsafeTarget as error:
        raise _fail(str(error)) from None
    count = round(rate * duration)
    if count < 1:
        raise _fail("rate x duration is less than one request", 1)
    if count > MAX_REQUESTS:
        raise _fail(f"{count} requests is more than the {MAX_REQUESTS} this tool pre-builds", 1)
    api_key = key or default_key()
    if not api_key:
        raise _fail("no API key: pass --key, or set MIAOPI_LOADTEST_KEY or MIAOPI_API_KEYS", 1)
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    started = time.perf_counter()
    pools = _pools(registry, today, seed)
    plan = build_plan(
        pools,
        count,
        host=target.host_header,
        key=api_key,
        base_path=target.base_path,
        run_id=secrets.token_hex(4),
        seed=seed,
        today=today,
        precheck_share=precheck_share,
    )
    _err.print(
        f"{count} requests pre-built in {time.perf_counter() - started:.1f} s "
        f"({', '.join(f'{k} {v}' for k, v in plan.counts().items())}); "
        f"sending at {rate:g}/s to {url}"
    )
    try:
        result = _run(target, plan, rate, connections, timeout, drain, live=not as_json)
    except OSError as error:
        raise _fail(f"cannot connect to {url}: {error}") from None
    if result.interrupted:  # Ctrl-C: report what came due before it
        plan = plan.first(result.count)
    with _ctrl_c_ignored():  # the run is over: its figures are not lost to one more key
        summary = report.summarize(result, plan, url=url, connections=connections)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        json_path = out / f"loadtest-{stamp}.json"
        if png:
            png_path = out / f"loadtest-{stamp}.png"
            report.write_png(result, summary, png_path)
            summary["report_png"] = str(png_path)
        summary["report_json"] = str(json_path)
        report.write_json(summary, json_path)
    _output(summary, as_json)
    if result.interrupted:
        raise typer.Exit(INTERRUPTED)


@contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """Ctrl-C does nothing in the block (in the main thread; elsewhere it is not ours)."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _pools(registry: Path | None, today: date, seed: int) -> Pools:
    if registry is None:
        _err.print("[yellow]warning:[/] no --registry: every applicant is a made-up ID number")
        return Pools()
    try:
        with _err.status(f"sampling applicants from {registry}"):
            return load_pools(registry, today=today, seed=seed)
    except (OSError, ValueError, KeyError) as error:
        raise _fail(f"cannot read registry {registry}: {error}", 1) from None


def _run(
    target: Target,
    plan: Any,
    rate: float,
    connections: int,
    timeout: float,
    drain: float,
    *,
    live: bool,
) -> run_result.RunResult:
    if not (live and _err.is_terminal):
        return client.run(
            target.host,
            target.port,
            plan,
            rate=rate,
            connections=connections,
            timeout_s=timeout,
            drain_s=drain,
        )
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        console=_err,
        auto_refresh=False,  # refreshed from the event loop: no second thread competing
        transient=False,
    )
    task = bar.add_task("sent", total=len(plan), stats="")

    def show(p: run_result.Progress) -> None:
        rate_now = (p.completed + p.failed) / max(p.elapsed_s, 1e-9)
        bar.update(
            task,
            completed=p.dispatched,
            stats=f"answered {p.completed} ({rate_now:.0f}/s)  failed {p.failed}  "
            f"in flight {p.in_flight}  waiting {p.queued}",
        )
        bar.refresh()

    with bar:
        result = client.run(
            target.host,
            target.port,
            plan,
            rate=rate,
            connections=connections,
            timeout_s=timeout,
            drain_s=drain,
            progress=show,
        )
        bar.update(task, completed=result.count)
        bar.refresh()
    return result


def _output(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
    else:
        Console(highlight=False).print(report.table(summary))
    for warning in summary["warnings"]:
        _err.print(f"[yellow]warning:[/] {warning}")
    _err.print(
        f"report: {summary['report_json']}"
        + (f", {summary['report_png']}" if "report_png" in summary else "")
    )
