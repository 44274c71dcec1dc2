"""Capacity sweep: the highest rate miaopi sustains on this machine within a p99 target.

One command (not collected by pytest)::

    .venv/bin/python benchmarks/capacity.py [--people 1000000] [--rates 2000,2500,...,5000]
                                            [--duration 60] [--p99-ms 50] [--workers 2] [--all]

For each rate, lowest first, it runs the end-to-end benchmark (``benchmarks/e2e.py``
with ``--skip-baseline --no-profile``): a fresh database imported from the same
registry, Redis warmed, ``miaopi serve`` started, the load test run, everything
removed again, so every rate starts from the same registry. Each run is judged by
:mod:`approval_service.loadtest.capacity` (no errors, kept up with the schedule, p99
within ``--p99-ms``, the generator on time). The sweep stops at the first rate not
sustained (``--all`` runs every rate) and writes ``var/bench/capacity-<time>.json``
with every run's figures, the verdicts, the machine, the date and the command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from approval_service.loadtest.capacity import Verdict, sustained_rate, verdict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_support import code_revision, machine

ROOT = Path(__file__).resolve().parents[1]


def rates(text: str) -> list[float]:
    try:
        found = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--rates takes rates per second separated by commas, like 3000,4000: got {text!r}"
        ) from None
    if not found or found[0] <= 0:
        raise argparse.ArgumentTypeError("--rates needs at least one rate above 0")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--rates", type=rates, default=rates("2000,2500,3000,3500,4000,4500,5000"))
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--p99-ms", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--all", action="store_true", help="run every rate, not only up to a miss")
    args = parser.parse_args()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = ROOT / "var" / "bench" / f"capacity-{stamp}"
    runs: list[dict[str, Any]] = []
    verdicts: list[Verdict] = []
    for rate in args.rates:
        path = out / f"e2e-{rate:g}.json"
        command = [sys.executable, str(ROOT / "benchmarks" / "e2e.py"),
                   "--people", str(args.people), "--rate", f"{rate:g}",
                   "--duration", f"{args.duration:g}", "--workers", str(args.workers),
                   "--skip-baseline", "--no-profile", "--report", str(path)]  # fmt: skip
        print(f"--- {rate:g}/s: {shlex.join(command)}", flush=True)
        code = subprocess.run(command, cwd=ROOT, check=False).returncode
        if code != 0 or not path.exists():  # a run that broke down sustained nothing
            judged = Verdict(rate, False, f"the benchmark run failed (exit {code}): see above")
            verdicts.append(judged)
            runs.append({"rate": rate, "sustained": False, "why": judged.why})
            break
        real = json.loads(path.read_text(encoding="utf-8"))["miaopi"]
        judged = verdict(real, p99_ms=args.p99_ms)
        verdicts.append(judged)
        runs.append({
            "rate": rate, "sustained": judged.sustained, "why": judged.why,
            "throughput": real["throughput"], "errors": real["errors"],
            "latency_ms": real["latency_ms"], "cpu": real["cpu"],
            "generator_cpu_percent": real["generator_cpu_percent"], "report": str(path),
        })  # fmt: skip
        if not judged.sustained and not args.all:
            break
    best = sustained_rate(verdicts)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine(),
        "code": code_revision(ROOT),
        "p99_limit_ms": args.p99_ms,
        "sustained_rate": best,
        "runs": runs,
    }
    summary = out.with_suffix(".json")
    summary.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\n{'rate /s':>8} {'answered':>9} {'errors':>7} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'CPU ms/app':>11} {'busy %':>7}  verdict")  # fmt: skip
    for r in runs:
        if "latency_ms" not in r:
            print(
                f"{r['rate']:8g} {'—':>9} {'—':>7} {'—':>9} {'—':>9} {'—':>11} {'—':>7}  {r['why']}"
            )
            continue
        lat, cpu = r["latency_ms"], r["cpu"]
        used = cpu["server_ms_per_request"] + (cpu.get("postgres_ms_per_request") or 0)
        busy = cpu["machine_busy_percent"]
        shown = "sustained" if r["sustained"] else r["why"]
        print(f"{r['rate']:8g} {r['throughput']:9g} {r['errors']:7d} {lat['p50']:9.1f} "
              f"{lat['p99']:9.1f} {used:11.3f} {busy:7.1f}  {shown}")  # fmt: skip
    held = "none of the rates tried" if best is None else f"{best:g}/s"
    print(f"\nsustained with p99 <= {args.p99_ms:g} ms and no errors: {held}")
    print(f"report: {summary.relative_to(ROOT)}")
    print(f"reproduce: {report['command']}")


if __name__ == "__main__":
    main()
