"""Prometheus metrics of decisions: counts by item and outcome, latency, cache use.

Each worker process counts its own. Under several workers (``miaopi serve --workers
N``) a scrape reaches one of them, so ``miaopi serve`` then runs prometheus_client's
multiprocess mode (:data:`MULTIPROC_ENV`, a folder each worker writes its values to)
and :func:`exposition` adds every worker's values up: whichever worker answers
``/metrics`` gives the whole service's totals.

The service counts through :meth:`Metrics.count` and :meth:`Metrics.observe`, which add
up in the process (:mod:`~approval_service.service.metric_tallies`) until
:meth:`Metrics.flush`: before every exposition, and once a second in a serving worker.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.metrics import MetricWrapperBase

from approval_service.service.metric_tallies import Tallies

#: set (to an empty folder) before the workers start, their values add up (see above)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: prometheus_client chose its mode when it was imported (just above): so do we
MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GROUP_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._tallies = Tallies()
        self.decisions = Counter(
            "miaopi_decisions",
            "Decisions made, by item, outcome and kind (apply/precheck)",
            ["item", "decision", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "miaopi_decision_seconds",
            "Time to decide (and issue) one application",
            ["item"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.issued = Counter(
            "miaopi_issued", "Results issued, by item", ["item"], registry=self.registry
        )
        self.groups = Counter(
            "miaopi_write_groups",
            "Groups of the writer by path: at_once (one round trip), checked (stamps read "
            "first), refused_at_once (PostgreSQL refused it: a stamp moved, a key was used "
            "before, an issuance was refused or a constraint broken; then checked; its "
            "time is the checked way's alone when the event loop's writer was refused)",
            ["path"],
            registry=self.registry,
        )
        # where an application's time goes: decision_seconds is the sum of these stages
        # (and the hand-overs between them), each observed once per application or group
        self.fact_read = Histogram(
            "miaopi_fact_read_seconds",
            "Time to read one application's facts (the cache, or the registry on a miss)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.group_wait = Histogram(
            "miaopi_write_queue_seconds",
            "Time a group's first application waited for the writer to start on it "
            "(the writer busy with the group before, and the linger)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.group_size = Histogram(
            "miaopi_write_group_size",
            "Applications per transaction of the writer (a failed group's applications "
            "written one by one count as groups of one)",
            buckets=GROUP_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.group_seconds = Histogram(
            "miaopi_write_group_seconds",
            "Time the writer takes to record a group (on PostgreSQL, to commit it too), "
            "by path (see miaopi_write_groups; failed: the group raised, and its "
            "applications are then written one by one, each a group of its own)",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "miaopi_request_errors",
            "Requests refused, by error code",
            ["code"],
            registry=self.registry,
        )

    def count(self, child: Any, amount: float = 1.0) -> None:
        """Add ``amount`` to a counter (or a labelled child of one), at the next flush."""
        self._tallies.count(child, amount)

    def observe(self, child: Any, value: float) -> None:
        """Observe ``value`` in a histogram (or a labelled child of one), at the next flush."""
        self._tallies.observe(child, value)

    def flush(self) -> None:
        """Pass what was counted since the last flush on to the registry (and, in
        multiprocess mode, to this worker's file)."""
        self._tallies.flush()

    async def flush_every(self, seconds: float) -> None:
        """Flush every ``seconds`` until cancelled, then once more: a serving worker's
        counts reach the scrapes that other workers answer (multiprocess mode)."""
        try:
            while True:
                await asyncio.sleep(seconds)
                self.flush()
        finally:
            self.flush()

    def observe_group(self, size: int, waited: float) -> None:
        """The writer starts on a group of ``size``; its first waited ``waited`` seconds."""
        self.observe(self.group_size, size)
        self.observe(self.group_wait, waited)

    def labelled(self, metric: MetricWrapperBase, *values: str) -> Any:
        """``metric.labels(*values)``, kept: the lookup and checks run once per label set."""
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child


def exposition(metrics: Metrics) -> bytes:
    """The text a scrape gets, this process's pending counts included: every worker's
    values added up in multiprocess mode, else this process's registry."""
    metrics.flush()
    if MULTIPROCESS:
        every_worker = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
        return generate_latest(every_worker)
    return generate_latest(metrics.registry)


class CountingCache:
    """A fact cache that counts hits and misses into the metrics."""

    def __init__(self, inner: object, metrics: Metrics) -> None:
        self._inner = inner
        self._count = metrics.count
        self.hits = Counter(
            "miaopi_fact_cache_hits",
            "Fact bundles served from the cache",
            registry=metrics.registry,
        )
        self.misses = Counter(
            "miaopi_fact_cache_misses",
            "Fact bundles gathered from the database",
            registry=metrics.registry,
        )

    def get(self, id_number: str, stamp: object) -> object:
        found = self._inner.get(id_number, stamp)  # type: ignore[attr-defined]
        self._count(self.misses if found is None else self.hits)
        return found

    def peek(self, id_number: str) -> object:
        found = self._inner.peek(id_number)  # type: ignore[attr-defined]
        self._count(self.misses if found is None else self.hits)
        return found

    async def apeek(self, id_number: str, names: Collection[str] | None = None) -> object:
        found = await self._inner.apeek(id_number, names)  # type: ignore[attr-defined]
        self._count(self.misses if found is None else self.hits)
        return found

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)
