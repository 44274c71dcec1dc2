"""The engine benchmark's facts come from the author cases and are checked before timing."""

from __future__ import annotations

from pathlib import Path

import pytest

from approval_service.authoring.cases import Case
from approval_service.authoring.suite import Suite, load_suite
from approval_service.bench.engine import BenchError, check, measure, workload_for
from approval_service.engine.backends import BACKENDS

RULES = Path(__file__).resolve().parents[2] / "rules"


@pytest.fixture(scope="module")
def suite() -> Suite:
    return load_suite(RULES)


def test_workload_is_the_first_approved_then_the_first_rejected_case(suite: Suite) -> None:
    cases = suite.cases_of("elderly-allowance")
    workload = workload_for("elderly-allowance", suite.cases)
    approved = next(c for c in cases if c.expect.decision == "approved")
    rejected = next(c for c in cases if c.expect.decision == "rejected")
    assert workload.cases == (approved, rejected)


def test_an_item_without_usable_cases_is_an_error(suite: Suite) -> None:
    referred = [c for c in suite.cases_of("elderly-allowance") if c.expect.decision == "referred"]
    with pytest.raises(BenchError, match="no case expects approved or rejected"):
        workload_for("elderly-allowance", referred)


def test_a_wrong_decision_stops_the_measurement(suite: Suite) -> None:
    workload = workload_for("elderly-allowance", suite.cases)
    first = workload.cases[0]
    lying = Case(**{**first.__dict__, "expect": workload.cases[1].expect})
    decider = BACKENDS["compiled"](suite.policies["elderly-allowance"])
    with pytest.raises(BenchError, match="decides approved"):
        check(decider, type(workload)("elderly-allowance", (lying,)))


def test_measure_gives_a_positive_rate(suite: Suite) -> None:
    workload = workload_for("elderly-allowance", suite.cases)
    decider = BACKENDS["compiled"](suite.policies["elderly-allowance"])
    assert measure(decider, workload, seconds=0.02, repeats=2) > 0
