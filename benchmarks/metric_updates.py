"""The metric updates of one application, timed: straight to prometheus_client, or added
up in the process and flushed (``approval_service.service.metric_tallies``).

An application counts a decision, a cache hit and a result issued, and observes two
histograms (its fact read and its whole time). Run::

    .venv/bin/python benchmarks/metric_updates.py

It times both ways in prometheus_client's single-process mode and in its multiprocess
mode (what ``miaopi serve --workers N`` runs; a temporary folder, removed after), each in
a process of its own since the mode is chosen when prometheus_client is imported, and
prints µs an application (``--json``: the same as JSON). In single-process mode each way
must leave the same samples in the registry, or the run fails (in multiprocess mode a
value starts from what an earlier one of the same name left in the process's file, so
the rounds add up there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def child(applications: int, rounds: int) -> dict[str, float]:
    from approval_service.service.metrics import MULTIPROCESS, CountingCache, Metrics

    def one_way(tallied: bool) -> tuple[float, dict[tuple[str, str], float]]:
        m = Metrics()
        cache = CountingCache(object(), m)
        started = time.perf_counter()
        for _ in range(applications):
            issued = m.labelled(m.issued, "elderly-allowance")
            decided = m.labelled(m.decisions, "elderly-allowance", "approved", "apply")
            latency = m.labelled(m.latency, "elderly-allowance")
            if tallied:
                m.observe(m.fact_read, 0.0008)
                m.count(cache.hits)
                m.count(issued)
                m.count(decided)
                m.observe(latency, 0.003)
            else:
                m.fact_read.observe(0.0008)
                cache.hits.inc()
                issued.inc()
                decided.inc()
                latency.observe(0.003)
        m.flush()
        took = (time.perf_counter() - started) / applications * 1e6
        values = {
            (s.name, str(sorted(s.labels.items()))): s.value
            for family in m.registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }
        return took, values

    best: dict[str, float] = {}
    seen: dict[str, dict[tuple[str, str], float]] = {}
    for _ in range(rounds):
        for name, tallied in (("direct", False), ("tallied", True)):
            took, seen[name] = one_way(tallied)
            best[name] = min(best.get(name, took), took)
    if not MULTIPROCESS and seen["direct"] != seen["tallied"]:
        raise SystemExit("the two ways left different samples in the registry")
    return {name: round(us, 2) for name, us in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--applications", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.applications, args.rounds)))
        return
    figures = {}
    command = [sys.executable, __file__, "--child", "--applications", str(args.applications)]
    command += ["--rounds", str(args.rounds)]
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with tempfile.TemporaryDirectory(prefix="miaopi-metric-updates-") as folder:
        for mode, extra in (("single", {}), ("multiprocess", {"PROMETHEUS_MULTIPROC_DIR": folder})):
            out = subprocess.run(
                command, env=env | extra, capture_output=True, text=True, check=False
            )
            if out.returncode != 0:
                raise SystemExit(f"{mode}: {out.stderr.strip()}")
            figures[mode] = json.loads(out.stdout)
    if args.json:
        print(json.dumps({"applications": args.applications, **figures}))
        return
    print(f"µs an application (best of {args.rounds}), {args.applications} applications")
    for mode, ways in figures.items():
        print(f"{mode:14} direct {ways['direct']:6.2f}   tallied {ways['tallied']:6.2f}")


if __name__ == "__main__":
    main()
