"""A record answers with the document first returned, made from its columns (migration 0017).

Since 0017 a decision record keeps no copy of its response document: ``GET``, a repeated
``Idempotency-Key`` and a review make it from the record's columns, and it must be the
document the portal was first given, key order included. Records written before keep
their stored document and are answered with it. Every test runs on both backends
(``conftest.py``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from approval_service.service.applications import ApplicationService
from approval_service.service.clock import FixedClock
from approval_service.service.container import Container
from approval_service.service.documents import recorded_document
from approval_service.service.records import applications
from approval_service.service.review import review
from approval_service.service.workdays import WorkCalendar
from data_lookups.database import write_transaction

from .applicants import (
    CARD_FORM,
    YOUNG,
    ZONE,
    add_person,
    answered,
    new_key,
    record,
    scalar,
)
from .record_rows import NOW, new_id, record_row

# (item, form, applicant, decision): the shapes a document takes
SHAPES = {
    "approved-issuing-a-card": ("senior-card-new", CARD_FORM, "old", "approved"),
    "approved-issuing-an-allowance": ("elderly-allowance", None, "old", "approved"),
    "rejected": ("elderly-allowance", None, "young", "rejected"),
    "referred": ("elderly-allowance", None, "unknown", "referred"),
}


def applicant(container: Container, kind: str) -> str:
    if kind == "unknown":
        return new_id()
    return add_person(container, YOUNG if kind == "young" else date(1940, 4, 4))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_record_answers_with_the_document_first_returned(
    container: Container, service: ApplicationService, shape: str
) -> None:
    item, form, kind, decision = SHAPES[shape]
    key = new_key()
    person = applicant(container, kind)
    doc, created = service.apply("portal", item, person, form, key)
    assert created and doc["decision"] == decision
    made = answered(container, doc["application_id"])  # asserts nothing stored
    sql = "SELECT count(*) FROM applications WHERE id = :i AND document IS NULL"
    assert scalar(container, sql, i=doc["application_id"]) == 1  # SQL NULL, not JSON null
    assert made == doc and list(made) == list(doc)  # key order too: the same JSON
    assert service.get(doc["application_id"]) == doc
    again, created_again = service.apply("portal", item, person, form, key)
    assert not created_again and again == doc and list(again) == list(doc)


def test_a_reviewed_referral_answers_with_its_review(
    container: Container, service: ApplicationService
) -> None:
    person = new_id()  # not in the registry: referred
    doc, _ = service.apply("portal", "elderly-allowance", person, None)
    reasons = [{"code": "NOT_FOUND", "message": "人口库无此人", "basis": "规范"}]
    reviewed = review(service, doc["application_id"], "rejected", " 王科员 ", reasons)
    assert record(container, doc["application_id"])["document"] is None  # none stored still
    assert service.get(doc["application_id"]) == reviewed
    assert reviewed == {
        **{k: v for k, v in doc.items() if k != "supervision"},
        "decision": "rejected",
        "reasons": reviewed["reasons"],
        "result": {},
        "review": {
            "officer": "王科员",
            "decision": "rejected",
            "reviewed_at": container.clock.now().isoformat(timespec="seconds"),
        },
    }
    assert [r["code"] for r in reviewed["reasons"]] == ["NOT_FOUND"]


def test_an_approved_referral_answers_with_its_card_on_get_and_on_a_repeated_key(
    container: Container, service: ApplicationService
) -> None:
    """The officer's approval issues a card that only the record's columns hold now."""
    person = add_person(container, photo=False)  # no photo: a new card is referred
    key = new_key()
    doc, _ = service.apply("portal", "senior-card-new", person, CARD_FORM, key)
    assert doc["decision"] == "referred"
    reviewed = review(service, doc["application_id"], "approved", "王科员")
    assert reviewed["decision"] == "approved" and reviewed["result"]["card_no"].startswith("AH")
    assert service.get(doc["application_id"]) == reviewed
    assert answered(container, doc["application_id"]) == reviewed
    again, created = service.apply("portal", "senior-card-new", person, CARD_FORM, key)
    assert not created and again == reviewed  # the record's answer, as the review left it


def test_a_referral_replayed_later_keeps_its_first_light_and_moment(
    container: Container, service: ApplicationService
) -> None:
    """A repeated key gets the first answer (the light of the day of decision, the moment
    to the second); GET shows today's light."""
    decided = datetime(2026, 11, 23, 10, 0, 5, 678_901, tzinfo=ZONE)
    first_clock = container.clock
    key, person = new_key(), new_id()
    try:
        container.clock = FixedClock(ZONE, decided)
        doc, _ = service.apply("portal", "elderly-allowance", person, None, key)
        assert doc["decided_at"] == "2026-11-23T10:00:05+08:00"
        assert answered(container, doc["application_id"]) == doc
        container.clock = FixedClock(ZONE, decided + timedelta(days=30))  # long overdue
        again, created = service.apply("portal", "elderly-allowance", person, None, key)
        now = service.get(doc["application_id"])
    finally:
        container.clock = first_clock
    assert not created and again == doc and doc["supervision"] == "green"
    assert now is not None and now["supervision"] == "red"
    assert {**now, "supervision": "green"} == doc


def test_a_record_written_before_0017_answers_with_its_stored_document(
    container: Container, service: ApplicationService
) -> None:
    """An upgrade keeps every answer: an older record's stored document wins over its
    columns, and a review keeps it up to date."""
    person = new_id()
    row = record_row(person)
    stored = {"application_id": row["id"], "item": row["item"], "written": "before 0017"}
    row["document"] = stored
    referral = {
        **record_row(person),
        "decision": "referred",
        "deadline": NOW.date() + timedelta(days=3),
        "review_state": "open",
    }
    referral["document"] = {
        "application_id": referral["id"],
        "deadline": referral["deadline"].isoformat(),
        "supervision": "green",
        "written": "before 0017",
    }
    with write_transaction(container.engine) as conn:
        conn.execute(applications.insert(), [row, referral])
    assert service.get(row["id"]) == stored
    reasons = [{"code": "X", "message": "不符合", "basis": "规范"}]
    reviewed = review(service, referral["id"], "rejected", "王科员", reasons)
    assert reviewed["written"] == "before 0017" and reviewed["decision"] == "rejected"
    kept = record(container, referral["id"])["document"]
    assert kept == reviewed and "supervision" not in kept
    assert service.get(referral["id"]) == reviewed


SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        pytest.param(
            datetime(2026, 11, 23, 2, 0, 5, 900, tzinfo=UTC),
            "2026-11-23T10:00:05+08:00",
            id="utc",
        ),
        pytest.param(
            datetime(2026, 11, 23, 10, 0, 5, tzinfo=SHANGHAI),
            "2026-11-23T10:00:05+08:00",
            id="city",
        ),
        pytest.param(
            datetime(2026, 11, 23, 23, 30, tzinfo=timezone(timedelta(hours=-5))),
            "2026-11-24T12:30:00+08:00",
            id="other-day",
        ),
        pytest.param(datetime(2026, 11, 23, 10, 0, 5), "2026-11-23T10:00:05+08:00", id="naive"),
    ],
)
def test_moments_are_shown_in_the_city_zone(moment: datetime, shown: str) -> None:
    """PostgreSQL gives a moment in the session's zone, SQLite the wall time written (the
    city's, naive): either way the document shows the city's time and offset."""
    row = {
        **record_row(new_id()),
        "document": None,
        "decided_at": moment,
        "reviewed_at": None,
    }
    doc = recorded_document(row, SHANGHAI, WorkCalendar.from_folder(None))
    assert doc["decided_at"] == shown
