"""pytest-benchmark: one decision per call, every policy on every backend.

The facts are those ``miaopi bench engine`` uses (see
:mod:`approval_service.bench.engine`): here the first approved case of each
policy's rules/cases/<item>.yaml (the first rejected one if none is approved),
without trace. The decision is checked once before timing. A backend that
cannot be built fails, durable included: it is never skipped.

Run alone with ``pytest benchmarks``; ``--benchmark-disable`` runs each once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from approval_service.authoring.suite import load_suite
from approval_service.bench.engine import workload_for
from approval_service.engine.backends import BACKENDS

RULES = Path(__file__).resolve().parents[1] / "rules"
SUITE = load_suite(RULES)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("item", sorted(SUITE.policies))
def test_decide(benchmark: BenchmarkFixture, item: str, backend: str) -> None:
    assert not SUITE.problems, "\n".join(map(str, SUITE.problems))
    case = workload_for(item, SUITE.cases).cases[0]
    try:
        decider = BACKENDS[backend](SUITE.policies[item])
    except ImportError as exc:
        pytest.fail(f"the {backend} backend cannot be loaded: {exc}", pytrace=False)
    doc = decider.decide(case.facts, case.as_of, case.form)
    assert doc["decision"] == case.expect.decision, f"{case.where}: {doc}"
    benchmark.group = item
    benchmark(decider.decide, case.facts, case.as_of, case.form)
