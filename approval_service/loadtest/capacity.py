"""Which offered rates a service sustained: load-test reports judged against a latency target.

Operators ask "how many applications per second, at what latency?". One load test
answers for one rate; a sweep (``benchmarks/capacity.py``) runs several and this
module gives the verdict on each report and the rate the service sustains.

A run sustains its rate when every request got its expected answer (no errors),
the service kept up (it answered at least ``keep_up`` of the offered rate) and
the p99 latency, counted from each request's scheduled send time, is within the
limit. A run whose generator fell behind its own schedule proves nothing either
way and is not counted as sustained. The sustained rate is the highest one tried
below which every tried rate was sustained too: a lucky run above a failed one
does not count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from approval_service.loadtest.report import behind_schedule

#: the share of the offered rate a run must answer to count as keeping up
KEEP_UP = 0.99


@dataclass(frozen=True)
class Verdict:
    rate: float
    sustained: bool
    why: str  # empty when sustained, otherwise every reason it was not


def verdict(report: Mapping[str, Any], *, p99_ms: float, keep_up: float = KEEP_UP) -> Verdict:
    """The verdict on one ``miaopi loadtest --json`` report against ``p99_ms``."""
    rate = float(report["rate_target"])
    reasons: list[str] = []
    if behind_schedule(report):
        lag = report["send_lag_ms"]
        reasons.append(
            f"the generator fell behind its schedule (send lag p99 {lag['p99']:.1f} ms, "
            f"max {lag['max']:.1f} ms): the run proves nothing"
        )
    if report["errors"]:
        reasons.append(f"{report['errors']} errors")
    if report["throughput"] < keep_up * rate:
        reasons.append(f"answered {report['throughput']:g}/s of {rate:g}/s")
    p99 = report["latency_ms"]["p99"]
    if p99 > p99_ms:
        reasons.append(f"p99 {p99:g} ms over {p99_ms:g} ms")
    return Verdict(rate, not reasons, "; ".join(reasons))


def sustained_rate(verdicts: Iterable[Verdict]) -> float | None:
    """The highest rate sustained with every lower rate tried sustained as well."""
    best = None
    for v in sorted(verdicts, key=lambda v: v.rate):
        if not v.sustained:
            break
        best = v.rate
    return best
