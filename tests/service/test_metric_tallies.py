"""Counts added up in the process reach the metrics exactly as direct updates would."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import Counter, Histogram

from approval_service.service.metrics import (
    GROUP_SIZE_BUCKETS,
    LATENCY_BUCKETS,
    Metrics,
    exposition,
)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def histograms(metrics: Metrics) -> list[Any]:
    """Every histogram of the service, a labelled child where it has labels."""
    return [
        metrics.fact_read,
        metrics.group_wait,
        metrics.group_size,
        metrics.labelled(metrics.latency, "elderly-allowance"),
        metrics.labelled(metrics.group_seconds, "at_once"),
    ]


#: every bucket's bound itself (a value on a bound counts in that bucket), both sides of
#: it, zero and past the last bound
EDGES = sorted(
    {0.0, 1e9}
    | {b for b in LATENCY_BUCKETS + GROUP_SIZE_BUCKETS}
    | {b * 0.999 for b in LATENCY_BUCKETS + GROUP_SIZE_BUCKETS}
    | {b * 1.001 for b in LATENCY_BUCKETS + GROUP_SIZE_BUCKETS}
)
VALUES = st.lists(
    st.sampled_from(EDGES) | st.floats(0, 300, allow_nan=False, allow_infinity=False),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(values=VALUES, counts=st.lists(st.integers(1, 5), max_size=20))
def test_a_flush_gives_what_direct_updates_give(values: list[float], counts: list[int]) -> None:
    tallied, direct = Metrics(), Metrics()
    for t_child, d_child in zip(histograms(tallied), histograms(direct), strict=True):
        for value in values:
            tallied.observe(t_child, value)
            d_child.observe(value)
    for amount in counts:
        tallied.count(tallied.labelled(tallied.decisions, "senior-card-new", "approved", "apply"))
        tallied.count(tallied.issued.labels("senior-card-new"), amount)
        direct.labelled(direct.decisions, "senior-card-new", "approved", "apply").inc()
        direct.issued.labels("senior-card-new").inc(amount)
    tallied.flush()
    assert samples(tallied) == pytest.approx(samples(direct))


def test_nothing_reaches_the_registry_before_a_flush_and_a_scrape_flushes() -> None:
    metrics = Metrics()
    child = metrics.labelled(metrics.errors, "unknown_item")
    metrics.count(child)
    metrics.observe(metrics.fact_read, 0.003)
    assert metrics.registry.get_sample_value(
        "miaopi_request_errors_total", {"code": "unknown_item"}
    ) in (None, 0.0)
    text = exposition(metrics).decode()
    assert 'miaopi_request_errors_total{code="unknown_item"} 1.0' in text
    assert 'miaopi_fact_read_seconds_bucket{le="0.005"} 1.0' in text
    assert 'miaopi_fact_read_seconds_bucket{le="0.002"} 0.0' in text
    metrics.flush()  # a second flush adds nothing: the first forgot what it passed on
    assert (
        metrics.registry.get_sample_value("miaopi_request_errors_total", {"code": "unknown_item"})
        == 1.0
    )


def test_counts_from_several_threads_while_flushing_are_all_kept() -> None:
    metrics = Metrics()
    counter: Counter = metrics.issued.labels("elderly-allowance")
    histogram: Histogram = metrics.fact_read
    threads, each = 4, 5000
    stop = threading.Event()

    def flushing() -> None:
        while not stop.is_set():
            metrics.flush()

    def counting() -> None:
        for i in range(each):
            metrics.count(counter)
            metrics.observe(histogram, 0.001 if i % 2 else 0.5)

    flusher = threading.Thread(target=flushing)
    flusher.start()
    workers = [threading.Thread(target=counting) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    flusher.join()
    metrics.flush()
    get = metrics.registry.get_sample_value
    assert get("miaopi_issued_total", {"item": "elderly-allowance"}) == threads * each
    assert get("miaopi_fact_read_seconds_count", {}) == threads * each
    assert get("miaopi_fact_read_seconds_bucket", {"le": "0.001"}) == threads * each / 2
    assert get("miaopi_fact_read_seconds_sum", {}) == pytest.approx(
        threads * each / 2 * (0.001 + 0.5)
    )


def test_a_workers_flusher_passes_counts_on_while_it_runs_and_when_it_stops() -> None:
    metrics = Metrics()
    child = metrics.issued.labels("senior-card-new")

    def issued() -> float:
        return metrics.registry.get_sample_value("miaopi_issued_total", {"item": "senior-card-new"})

    async def run() -> None:
        flusher = asyncio.create_task(metrics.flush_every(0.01))
        metrics.count(child)
        for _ in range(200):  # within a few intervals, without a scrape
            await asyncio.sleep(0.01)
            if issued() == 1.0:
                break
        assert issued() == 1.0
        metrics.count(child)
        flusher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flusher
        assert issued() == 2.0  # the last counts, flushed as the worker stops

    asyncio.run(run())


def test_a_metric_that_refuses_its_update_is_logged_and_the_others_get_theirs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    metrics.count(metrics.errors)  # labelled, but passed without its labels: refused
    metrics.observe(metrics.latency, 0.01)  # the same, for a histogram
    metrics.count(metrics.issued.labels("senior-card-new"))
    metrics.observe(metrics.fact_read, 0.001)
    with caplog.at_level("ERROR", logger="approval_service.service.metric_tallies"):
        metrics.flush()  # does not raise
    assert [r.getMessage() for r in caplog.records] == [
        "a counter refused its update of 1.0",
        "a histogram refused its update of 1 values",
    ]
    get = metrics.registry.get_sample_value
    assert get("miaopi_issued_total", {"item": "senior-card-new"}) == 1.0
    assert get("miaopi_fact_read_seconds_count", {}) == 1.0
