"""Card numbers drawn ahead: the long way of a group draws spare numbers with its locks,
and the next small groups with cards go in one round trip with them (PostgreSQL); a
number a refused group used is not tried again. SQLite draws each number as it issues.

Every test runs on both backends (``conftest.py``).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from sqlalchemy import insert, text

from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container
from approval_service.service.group_recording import GroupRecorder
from data_lookups.database import write_transaction
from data_lookups.issuance import bump_versions
from data_lookups.models import SeniorCard

from .applicants import CARD_FORM, TODAY, add_person, paths_since, pending, postgres, write_paths


def card_numbers(container: Container, person: str) -> list[str]:
    with container.engine.connect() as conn:
        sql = "SELECT card_no FROM senior_cards WHERE id_number = :i ORDER BY card_no"
        return list(conn.execute(text(sql), {"i": person}).scalars())


def apply_for_a_card(container: Container, service: ApplicationService, recorder: GroupRecorder,
                     person: str) -> Any:  # fmt: skip
    application = pending(container, service, person, "senior-card-new", CARD_FORM)
    with write_transaction(container.engine) as conn:
        (outcome,) = recorder.record_group(conn, [application])
    return outcome


def test_card_groups_go_at_once_with_numbers_an_earlier_group_drew(
    container: Container, service: ApplicationService
) -> None:
    recorder = GroupRecorder(container)  # its own spare numbers: none yet
    people = [add_person(container) for _ in range(3)]
    before = write_paths(container)
    first = apply_for_a_card(container, service, recorder, people[0])
    spare = list(recorder.spare_cards)
    later = [apply_for_a_card(container, service, recorder, me) for me in people[1:]]
    numbers = [o.document["result"]["card_no"] for o in [first, *later]]
    assert all(o.decision == "approved" and o.issued for o in [first, *later])
    assert len(set(numbers)) == 3
    assert [card_numbers(container, me) for me in people] == [[n] for n in numbers]
    if postgres(container):  # the long way drew spares; the next two used them, in order
        assert len(spare) == recorder.spare_cards.keep and numbers[0] not in spare
        assert numbers[1:] == spare[:2] and list(recorder.spare_cards) == spare[2:]
        assert paths_since(container, before) == {"checked": 1, "at_once": 2}
    else:  # SQLite draws each number as it issues
        assert spare == [] and paths_since(container, before) == {"checked": 3}


def test_a_card_group_refused_at_once_does_not_try_its_number_again(
    container: Container, service: ApplicationService
) -> None:
    """The number a refused group used is dropped: it may be why (an import took it)."""
    recorder = GroupRecorder(container)
    apply_for_a_card(container, service, recorder, add_person(container))  # draws spares
    tried = list(recorder.spare_cards)[:1]
    person = add_person(container)
    application = pending(container, service, person, "senior-card-new", CARD_FORM)
    with write_transaction(container.engine) as conn:
        bump_versions(conn, [person])  # the cached stamp is behind now
    before = write_paths(container)
    with write_transaction(container.engine) as conn:
        (outcome,) = recorder.record_group(conn, [application])
    assert outcome.redecided and outcome.issued
    number = outcome.document["result"]["card_no"]
    assert card_numbers(container, person) == [number]
    assert not set(tried) & set(recorder.spare_cards)  # dropped, not given back
    way = "refused_at_once" if postgres(container) else "checked"
    assert paths_since(container, before) == {way: 1}


def test_a_spare_number_an_import_took_since_is_refused_and_not_tried_again(
    container: Container, service: ApplicationService
) -> None:
    if not postgres(container):
        pytest.skip("SQLite keeps no spare numbers: each is drawn as it is issued")
    recorder = GroupRecorder(container)
    apply_for_a_card(container, service, recorder, add_person(container))  # draws spares
    taken = next(iter(recorder.spare_cards))
    holder = add_person(container)
    with write_transaction(container.engine) as conn:  # as an import would: rows + bump
        conn.execute(
            insert(SeniorCard).values(
                card_no=taken, id_number=holder, card_type="B", status="valid",
                issued_on=TODAY, expires_on=date(2031, 12, 1),
            )
        )  # fmt: skip
        bump_versions(conn, [holder])
    person = add_person(container)
    before = write_paths(container)
    outcome = apply_for_a_card(container, service, recorder, person)
    assert outcome.issued and not outcome.redecided  # the facts were current all along
    number = outcome.document["result"]["card_no"]
    assert number != taken and card_numbers(container, person) == [number]
    assert taken not in set(recorder.spare_cards)
    # tried at once with the taken number, refused, then done the long way
    assert paths_since(container, before) == {"refused_at_once": 1}
