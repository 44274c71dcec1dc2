"""Engine throughput: decisions per second for every policy on every backend.

The facts are the authors' own cases (``rules/cases/<item>.yaml``): for each
policy the first case expected ``approved`` and the first expected ``rejected``,
in file order. Every backend decides the same bundles, alternately, in a tight
loop timed with :func:`time.perf_counter` for a fixed duration, without trace;
the rate reported is the best of five repeats (the machine may be shared).
Single thread: durable_rules is not thread-safe. Each bundle's decision is
checked once before timing, so a fast wrong engine cannot win.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from approval_service.authoring.cases import Case
from approval_service.engine.backends import Decider
from approval_service.errors import MiaopiError

#: decisions the benchmark bundles are chosen for, in this order
WORKLOAD_DECISIONS = ("approved", "rejected")
MIN_BATCH_SECONDS = 0.002


class BenchError(MiaopiError):
    """The benchmark cannot run: no suitable case, or a backend decides wrongly."""


@dataclass(frozen=True)
class Workload:
    """The facts one policy is measured on: one bundle per chosen case."""

    item: str
    cases: tuple[Case, ...]

    @property
    def calls(self) -> list[tuple[Mapping[str, Any], date, Mapping[str, Any] | None]]:
        return [(c.facts, c.as_of, c.form) for c in self.cases]


def workload_for(item: str, cases: Iterable[Case]) -> Workload:
    """The first approved and the first rejected case of ``item`` (at least one of them)."""
    mine = [c for c in cases if c.item == item]
    chosen = [
        next(c for c in mine if c.expect.decision == decision)
        for decision in WORKLOAD_DECISIONS
        if any(c.expect.decision == decision for c in mine)
    ]
    if not chosen:
        raise BenchError(
            f"{item}: no case expects approved or rejected; add one to rules/cases/{item}.yaml"
        )
    return Workload(item, tuple(chosen))


def check(decider: Decider, workload: Workload) -> None:
    """Each bundle gets the decision its case expects, or :class:`BenchError`."""
    for case in workload.cases:
        got = decider.decide(case.facts, case.as_of, case.form)["decision"]
        if got != case.expect.decision:
            raise BenchError(
                f"{decider.backend} decides {got} for {item_case(case)}, "
                f"expected {case.expect.decision}; run `miaopi rules test` first"
            )


def item_case(case: Case) -> str:
    return f"{case.item} case `{case.name}` ({case.where})"


def _loop(decide: Callable[..., Any], calls: list[Any], rounds: int) -> None:
    for _ in range(rounds):
        for facts, today, form in calls:
            decide(facts, today, form)


def measure(decider: Decider, workload: Workload, seconds: float, repeats: int = 5) -> float:
    """Decisions per second: the best of ``repeats`` runs of ``seconds / repeats`` each."""
    check(decider, workload)
    decide, calls = decider.decide, workload.calls
    rounds = 1
    while True:  # batch size: enough calls that reading the clock costs nothing
        start = time.perf_counter()
        _loop(decide, calls, rounds)
        if time.perf_counter() - start >= MIN_BATCH_SECONDS or rounds >= 1 << 16:
            break
        rounds *= 2
    per_repeat = max(seconds / repeats, 0.0)
    best = 0.0
    for _ in range(repeats):
        done = 0
        start = time.perf_counter()
        deadline = start + per_repeat
        while True:
            _loop(decide, calls, rounds)
            done += rounds * len(calls)
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, done / (now - start))
    return best


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "system": platform.system(),
    }


def run_bench(
    deciders: Mapping[str, Mapping[str, Decider]],
    workloads: Mapping[str, Workload],
    seconds: float,
    progress: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """``{"policies": {item: {backend: rate}}, ...}`` for every item and backend given.

    ``deciders`` maps backend -> item -> decider; ``progress(item, backend)`` is
    called before each measurement.
    """
    policies: dict[str, dict[str, float]] = {}
    for item, workload in workloads.items():
        rates: dict[str, float] = {}
        for backend, by_item in deciders.items():
            if progress:
                progress(item, backend)
            rates[backend] = round(measure(by_item[item], workload, seconds), 1)
        policies[item] = rates
    ratios = {
        item: round(rates["compiled"] / rates["durable"], 1)
        for item, rates in policies.items()
        if rates.get("compiled") and rates.get("durable")
    }
    info = machine()
    return {
        "policies": policies,
        "ratio_compiled_over_durable": ratios,
        "workload": {item: [c.name for c in w.cases] for item, w in workloads.items()},
        "seconds_per_measurement": seconds,
        "machine": info,
        "python": info["python"],
    }
