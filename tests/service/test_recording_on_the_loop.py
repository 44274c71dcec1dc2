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

from .applicants import add_person, issued, paths_since, postgres, recorded, write_paths


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
