"""Applications of one event loop recorded by the writer on that loop (PostgreSQL), and
what it hands to the writer thread. Runs on both backends (``conftest.py``): SQLite
has no writer on the loop, every group goes through the thread.

The ways a group then takes (a stamp moved, a repeated key, cards without numbers at
hand) are the same tests as the thread's, run ``async``: ``test_group_recording.py``,
``test_repeated_keys.py``, ``test_card_numbers_ahead.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import Connection

from approval_service.service import group_commit
from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container
from approval_service.service.group_recording import GroupRecorder
from data_lookups.database import write_transaction

from .applicants import (
    add_person,
    issued,
    new_key,
    paths_since,
    pending,
    postgres,
    recorded,
    write_paths,
)


@pytest.fixture
def thread_groups(container: Container, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every group the writer thread records from now on."""
    sizes: list[int] = []
    process = container.committer.process

    def counted(conn: Connection, group: Sequence[Any]) -> list[Any]:
        sizes.append(len(group))
        return process(conn, group)

    monkeypatch.setattr(container.committer, "process", counted)
    return sizes


def test_a_quiet_loops_applications_go_at_once_on_the_loop(
    container: Container,
    service: ApplicationService,
    thread_groups: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # quiet whenever the thread has no group: the groups of this test all count as quiet
    monkeypatch.setattr(group_commit, "BUSY_WITHIN", 0.0)
    people = [add_person(container) for _ in range(3)]
    before = write_paths(container)

    async def main() -> list[tuple[dict[str, Any], bool]]:
        try:
            return await asyncio.gather(
                *(service.apply_async("portal", "elderly-allowance", p, None) for p in people)
            )
        finally:
            await container.aclose_loop_clients()

    answers = asyncio.run(main())
    assert [doc["decision"] for doc, created in answers if created] == ["approved"] * 3
    for person in people:
        assert recorded(container, applicant_id=person) == 1
        assert issued(container, "allowances", person) == 1
    # one group or more (the cache reads end on different turns of the loop)
    paths = paths_since(container, before)
    if postgres(container):  # each in one round trip, on the loop
        assert set(paths) == {"at_once"} and thread_groups == []
    else:
        assert set(paths) == {"checked"} and sum(thread_groups) == 3
        assert paths["checked"] == len(thread_groups)


def test_the_writer_on_the_loop_is_postgresqls_and_can_be_turned_off(
    container: Container,
) -> None:
    assert (container.committer.at_once_on_loop is not None) == postgres(container)
    off = Container.build(container.settings.model_copy(update={"loop_writer": False}))
    try:
        assert off.committer.at_once_on_loop is None
    finally:
        off.close()


def refused_seconds(container: Container) -> float:
    container.metrics.flush()
    sample = container.metrics.registry.get_sample_value
    labels = {"path": "refused_at_once"}
    return sample("miaopi_write_group_seconds_sum", labels) or 0.0


def test_a_group_refused_on_the_loop_is_counted_once_with_both_round_trips(
    container: Container, service: ApplicationService, recorder: GroupRecorder
) -> None:
    """Refused on the loop (its key taken by another worker), the group goes the long
    way on the thread, which counts it once, as refused, with the loop's round trip in
    its time, as when the thread is refused itself. SQLite: nothing goes at once."""
    person, key = add_person(container), new_key()
    doc, created = service.apply("portal", "elderly-allowance", person, None, key)
    assert created
    group = [pending(container, service, person, "elderly-allowance", key=key)]
    write = recorder.plan_at_once_on_loop(group)  # this recorder never saw the key
    if not postgres(container):
        assert write is None
        return
    assert write is not None
    conn = container.committer.open_connection()
    before, seconds = write_paths(container), refused_seconds(container)
    try:
        assert asyncio.run(write(conn)) is None  # refused: nothing written, not counted
        spent = group[0].refused_at_once
        assert spent is not None and spent > 0
        assert paths_since(container, before) == {}
        assert recorder.plan_at_once_on_loop(group) is None  # never at once again
        group[0].refused_at_once = spent + 0.25  # as if the loop's round trip took longer
        with write_transaction(container.engine) as thread_conn:
            (again,) = recorder.record_group(thread_conn, group)
    finally:
        conn.invalidate()
        conn.close()
    assert not again.created and again.document == doc
    assert paths_since(container, before) == {"refused_at_once": 1}
    assert refused_seconds(container) - seconds >= spent + 0.25
