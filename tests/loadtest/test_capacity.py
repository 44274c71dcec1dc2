"""The verdict on a load-test report, and the rate a sweep of them shows sustained."""

from __future__ import annotations

from typing import Any

import pytest

from approval_service.loadtest.capacity import Verdict, sustained_rate, verdict


def run(
    rate: float = 4000,
    *,
    answered: float | None = None,
    errors: int = 0,
    p99: float = 30.0,
    lag_p99: float = 2.0,
    lag_max: float = 8.0,
) -> dict[str, Any]:
    """The keys of a ``miaopi loadtest --json`` report that the verdict reads."""
    return {
        "rate_target": rate,
        "throughput": rate if answered is None else answered,
        "errors": errors,
        "latency_ms": {"p50": 5.0, "p90": 12.0, "p99": p99, "p999": p99 * 2, "max": p99 * 3},
        "send_lag_ms": {"p50": 0.5, "p99": lag_p99, "max": lag_max},
    }


@pytest.mark.parametrize(
    ("report", "why"),
    [
        (run(), ""),
        (run(p99=50.0), ""),  # the limit itself is within it
        (run(answered=3975), ""),  # 99.4 % of the offered rate keeps up
        (run(p99=50.1), "p99 50.1 ms over 50 ms"),
        (run(errors=3), "3 errors"),
        (run(answered=3900), "answered 3900/s of 4000/s"),
        (run(lag_p99=25.0), "the generator fell behind its schedule"),
        (run(lag_max=150.0), "the generator fell behind its schedule"),
        (run(errors=1, p99=900.0), "1 errors; p99 900 ms over 50 ms"),
    ],
)
def test_verdict_names_every_reason(report: dict[str, Any], why: str) -> None:
    got = verdict(report, p99_ms=50)
    assert got.rate == report["rate_target"]
    assert got.sustained is (why == "")
    assert got.why.startswith(why) if why else got.why == ""


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([], None),
        ([(3000, True), (3500, True), (4000, False)], 3500),
        ([(4000, False), (3000, True), (3500, True)], 3500),  # order tried does not matter
        ([(3000, True), (3500, False), (4000, True)], 3000),  # a lucky run above a failure
        ([(3000, False), (3500, True)], None),
        ([(3000, True), (5000, True)], 5000),
    ],
)
def test_sustained_rate_is_the_top_of_an_unbroken_run(
    results: list[tuple[float, bool]], expected: float | None
) -> None:
    verdicts = [Verdict(rate, ok, "" if ok else "failed") for rate, ok in results]
    assert sustained_rate(verdicts) == expected
