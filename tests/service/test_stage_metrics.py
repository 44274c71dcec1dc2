"""Where an application's time goes, as operators see it on /metrics: the fact read, the
wait for the writer, the group's size and the time to record it, by path.

Every test runs on both backends (``conftest.py``).
"""

from __future__ import annotations

import time
from datetime import date

import pytest
from sqlalchemy import text

from approval_service.errors import IssuanceConflict
from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container
from data_lookups.database import write_transaction

from .applicants import PATHS, add_person, paths_since, pending, results, write_paths, writer_held

HELD_S = 0.06


def sample(container: Container, name: str, **labels: str) -> float:
    container.metrics.flush()
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


def test_a_failed_group_is_timed_as_failed_and_its_reruns_as_groups_of_one(
    container: Container, service: ApplicationService
) -> None:
    fine, faulty = add_person(container), add_person(container)
    group = [pending(container, service, p, "elderly-allowance") for p in (fine, faulty)]
    with write_transaction(container.engine) as conn:  # no bump_versions: issuing will fail
        conn.execute(
            text(
                "INSERT INTO allowances (id_number, status, start_date, monthly_amount, source) "
                "VALUES (:i, 'active', :d, 60.00, 'import')"
            ),
            {"i": faulty, "d": date(2026, 1, 1)},
        )
    failed = sample(container, "miaopi_write_group_seconds_count", path="failed")
    sizes = sample(container, "miaopi_write_group_size_count")
    entries = sample(container, "miaopi_write_group_size_sum")
    with writer_held(container, service):
        futures = [container.committer.submit(p) for p in group]
    assert futures[0].result(timeout=30).decision == "approved"
    with pytest.raises(IssuanceConflict):
        futures[1].result(timeout=30)
    # the pair failed, then each alone: the faulty one failed again
    assert sample(container, "miaopi_write_group_seconds_count", path="failed") - failed == 2
    # the writer's own entry, the pair, and the pair's two written one by one
    assert sample(container, "miaopi_write_group_size_count") - sizes == 4
    assert sample(container, "miaopi_write_group_size_sum") - entries == 5
