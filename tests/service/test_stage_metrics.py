"""Where an application's time goes, as operators see it on /metrics: the fact read, the
wait for the writer, the group's size and the time to record it, by path.

Every test runs on both backends (``conftest.py``).
"""

from __future__ import annotations

import time

from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container

from .applicants import PATHS, add_person, paths_since, pending, results, write_paths, writer_held

HELD_S = 0.06


def sample(container: Container, name: str, **labels: str) -> float:
    return container.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_held_group_shows_its_wait_size_and_write_time(
    container: Container, service: ApplicationService
) -> None:
    reads = sample(container, "miaopi_fact_read_seconds_count")
    sizes = sample(container, "miaopi_write_group_size_count")
    entries = sample(container, "miaopi_write_group_size_sum")
    pairs = sample(container, "miaopi_write_group_size_bucket", le="2.0")
    fours = sample(container, "miaopi_write_group_size_bucket", le="4.0")
    waits = sample(container, "miaopi_write_queue_seconds_count")
    quick = sample(container, "miaopi_write_queue_seconds_bucket", le="0.05")
    timed = {p: sample(container, "miaopi_write_group_seconds_count", path=p) for p in PATHS}
    before = write_paths(container)

    people = [add_person(container) for _ in range(3)]
    with writer_held(container, service):  # the writer's own entry (read once) goes first
        futures = [
            container.committer.submit(pending(container, service, person, "elderly-allowance"))
            for person in people
        ]
        time.sleep(HELD_S)  # the three wait at least this long for the writer
    assert [o.decision for o in results(futures)] == ["approved"] * 3

    assert sample(container, "miaopi_fact_read_seconds_count") - reads == 4
    assert sample(container, "miaopi_write_group_size_count") - sizes == 2  # two groups
    assert sample(container, "miaopi_write_group_size_sum") - entries == 4
    # the writer's entry alone, then the three together
    assert sample(container, "miaopi_write_group_size_bucket", le="2.0") - pairs == 1
    assert sample(container, "miaopi_write_group_size_bucket", le="4.0") - fours == 2
    assert sample(container, "miaopi_write_queue_seconds_count") - waits == 2
    slow = 2 - (sample(container, "miaopi_write_queue_seconds_bucket", le="0.05") - quick)
    assert slow >= 1  # the held group waited over 50 ms
    went = paths_since(container, before)
    for path in PATHS:
        count = sample(container, "miaopi_write_group_seconds_count", path=path) - timed[path]
        assert count == went.get(path, 0)  # one timing per group, on the path it went
    assert sum(went.values()) == 2
