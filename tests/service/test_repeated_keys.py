"""Repeated Idempotency-Keys: the first answer again, whether the twin is in the same group
or a later one, and a refusal when the same key comes with another body.

Every test runs on both backends (``conftest.py``).
"""

from __future__ import annotations

import pytest

from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container
from approval_service.service.group_recording import GroupRecorder, RecentKeys
from approval_service.service.pending import IdempotencyMismatch
from data_lookups.database import write_transaction

from .applicants import (
    add_person,
    apply_via,
    codes,
    issued,
    new_key,
    paths_since,
    pending,
    postgres,
    recorded,
    scalar,
    write_paths,
    writer_held,
)

# -- repeated Idempotency-Keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "table", "rows"),
    [
        pytest.param("elderly-allowance", "allowances", 1, id="issuing"),
        pytest.param("elderly-allowance-certification", "allowances", 0, id="not-issuing"),
    ],
)
def test_a_repeated_key_within_one_group_gets_the_first_answer(
    container: Container,
    service: ApplicationService,
    recorder: GroupRecorder,
    item: str,
    table: str,
    rows: int,
) -> None:
    person, key = add_person(container), new_key()
    group = [pending(container, service, person, item, key=key) for _ in range(2)]
    with write_transaction(container.engine) as conn:
        first, again = recorder.record_group(conn, group)
    assert first.created and not again.created
    assert again.document == first.document and not again.issued
    assert recorded(container, idempotency_key=key) == 1
    assert recorded(container, applicant_id=person) == 1
    assert scalar(container, "SELECT count(*) FROM outbox WHERE recipient_id = :i", i=person) == 1
    assert issued(container, table, person) == rows


@pytest.mark.parametrize("via", ["sync", "async"])
def test_a_repeated_key_in_a_later_group_gets_the_first_answer(
    container: Container, service: ApplicationService, via: str
) -> None:
    person, key = add_person(container), new_key()
    doc, created = apply_via(via, service, person, "elderly-allowance", None, key)
    before = write_paths(container)
    again, created_again = apply_via(via, service, person, "elderly-allowance", None, key)
    # the writer recorded the key: its repeat goes the long way at once, not refused first
    assert paths_since(container, before) == {"checked": 1}
    assert created and doc["decision"] == "approved"
    assert not created_again and again == doc
    assert recorded(container, idempotency_key=key) == 1
    assert issued(container, "allowances", person) == 1
    assert scalar(container, "SELECT count(*) FROM outbox WHERE recipient_id = :i", i=person) == 1
    # the key belongs to the channel: another channel's same key is another application
    other, created_other = apply_via(
        via, service, person, "elderly-allowance", None, key, channel="counter"
    )
    assert created_other and other["application_id"] != doc["application_id"]
    assert codes(other) == ["ALREADY_RECEIVING"]


def test_a_key_another_writer_recorded_is_refused_at_once_and_then_answered_as_first(
    container: Container, service: ApplicationService, recorder: GroupRecorder
) -> None:
    """Another worker's writer recorded the key: this one does not know it, so on
    PostgreSQL the group's one round trip is refused and the long way finds the answer."""
    person, key = add_person(container), new_key()
    doc, created = service.apply("portal", "elderly-allowance", person, None, key)
    assert created
    before = write_paths(container)
    with write_transaction(container.engine) as conn:
        (again,) = recorder.record_group(
            conn, [pending(container, service, person, "elderly-allowance", key=key)]
        )
    assert paths_since(container, before) == {
        "refused_at_once" if postgres(container) else "checked": 1  # the key is taken
    }
    assert not again.created and again.document == doc
    assert recorded(container, idempotency_key=key) == 1
    assert issued(container, "allowances", person) == 1
    if postgres(container):  # now it knows: the next repeat goes the long way at once
        assert ("portal", key) in recorder.recent_keys


def test_recent_keys_forget_the_oldest_and_keep_what_came_again() -> None:
    keys = RecentKeys(size=3)
    keys.add([("portal", "a"), ("portal", "b"), ("portal", "c")])
    keys.add([("portal", "a")])  # again: now the newest
    keys.add([("portal", "d")])
    assert len(keys) == 3
    assert ("portal", "b") not in keys
    assert all(("portal", k) in keys for k in "acd")
    assert ("counter", "a") not in keys  # a key belongs to its channel


def test_the_same_key_with_another_body_in_one_group_changes_nothing(
    container: Container, service: ApplicationService, recorder: GroupRecorder
) -> None:
    person, key = add_person(container), new_key()
    group = [
        pending(container, service, person, "senior-card-new", {"mailing_address": a}, key)
        for a in ("亳州市", "合肥市")
    ]
    with pytest.raises(IdempotencyMismatch) as info, write_transaction(container.engine) as conn:
        recorder.record_group(conn, group)
    assert info.value.field == "Idempotency-Key"
    assert recorded(container, idempotency_key=key) == 0  # the group's transaction rolled back
    assert issued(container, "senior_cards", person) == 0
    assert ("portal", key) not in recorder.recent_keys  # a failed group's key is not kept
    before = write_paths(container)
    with write_transaction(container.engine) as conn:
        (first,) = recorder.record_group(conn, group[:1])
    assert first.created
    assert paths_since(container, before) == {"at_once" if postgres(container) else "checked": 1}


@pytest.mark.parametrize("via", ["sync", "async"])
def test_the_same_key_with_another_body_in_a_later_group_is_refused(
    container: Container, service: ApplicationService, via: str
) -> None:
    person, key = add_person(container), new_key()
    first, _ = apply_via(
        via, service, person, "senior-card-new", {"mailing_address": "亳州市"}, key
    )
    with pytest.raises(IdempotencyMismatch):
        apply_via(via, service, person, "senior-card-new", {"mailing_address": "合肥市"}, key)
    with pytest.raises(IdempotencyMismatch):  # another item under the same key
        apply_via(via, service, person, "elderly-allowance", None, key)
    assert recorded(container, idempotency_key=key) == 1
    assert issued(container, "senior_cards", person) == 1
    assert service.get(first["application_id"]) == first


def test_a_mismatched_twin_in_a_committer_group_fails_alone(
    container: Container, service: ApplicationService
) -> None:
    person, key = add_person(container), new_key()
    first, twin = (
        pending(container, service, person, "senior-card-new", {"mailing_address": a}, key)
        for a in ("亳州市", "合肥市")
    )
    committer = container.committer
    with writer_held(container, service):
        futures = [committer.submit(first), committer.submit(twin)]
    outcome = futures[0].result(timeout=30)
    assert outcome.created and outcome.decision == "approved" and outcome.issued
    assert isinstance(futures[1].exception(timeout=30), IdempotencyMismatch)
    assert recorded(container, idempotency_key=key) == 1
    assert issued(container, "senior_cards", person) == 1
