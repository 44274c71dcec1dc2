"""What a load-test run hands on: per-request arrays and the run's totals (the report's input).

The engine (:mod:`~approval_service.loadtest.client`) fills them; the report
(:mod:`~approval_service.loadtest.report`) turns them into figures.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

#: negative status codes for requests that got no HTTP answer (ABANDONED: still in flight
#: when Ctrl-C ended the wait for answers)
CONNECTION_ERROR, TIMEOUT, UNSENT, ABANDONED = -1, -2, -3, -4
#: outcome codes
OUTCOMES = ("none", "approved", "rejected", "referred")


@dataclass
class Progress:
    dispatched: int
    completed: int
    failed: int
    in_flight: int
    queued: int
    elapsed_s: float


@dataclass
class RunResult:
    rate: float
    duration_s: float
    count: int
    lag_ns: array[int]  # dispatch time - scheduled time (the generator's own lateness)
    wait_ns: array[int]  # write time - dispatch time (waiting for a free connection)
    latency_ns: array[int]  # answer complete - scheduled time; -1 when no answer
    status: array[int]  # HTTP status, or CONNECTION_ERROR / TIMEOUT / UNSENT / ABANDONED
    outcome: bytearray  # index into OUTCOMES
    elapsed_s: float  # start of the schedule to the last answer (or the drain's end)
    cpu_s: float  # the generator's own CPU (user + system) during the run
    connections_opened: int
    connections_peak: int
    interrupted: bool = False  # stopped by Ctrl-C: count is how many came due by then
