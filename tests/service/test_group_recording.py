"""Recording in groups: stale cached facts decided again at commit, one issuance per person,
the way a group is written (one round trip or the long way), and apply_async alike.

Every test runs on both backends: PostgreSQL with the Redis fact cache, SQLite with the
in-process one (``conftest.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    Connection,
    text,
)

from approval_service.errors import IssuanceConflict
from approval_service.service.applications import ApplicationService
from approval_service.service.container import Container
from approval_service.service.group_recording import GroupRecorder
from data_lookups.database import write_transaction
from data_lookups.facts import ALL_FACTS
from data_lookups.issuance import bump_versions, issue_allowance

from .applicants import (
    CARD_FORM,
    TODAY,
    YOUNG,
    add_person,
    answered,
    apply_on_a_loop,
    apply_via,
    codes,
    issued,
    new_key,
    paths_since,
    pending,
    postgres,
    record,
    recorded,
    register,
    results,
    write_paths,
    writer_held,
)
from .record_rows import new_id

# -- facts older than the registry are decided again at commit ---------------------------


@dataclass(frozen=True)
class Stale:
    """A registry change made after the person's facts were cached, telling nobody."""

    item: str
    form: dict[str, Any] | None
    registered: bool  # in the registry when the facts were cached
    change: Callable[[Connection, str], None]
    cached_decision: str  # what the cached facts would give
    decision: str  # what the registry gives now
    reasons: list[str]
    facts: Callable[[dict[str, Any]], bool]  # the stored record's facts are the fresh ones
    issued: tuple[str, int]  # (table, rows for the person afterwards)


def _allowance_granted_elsewhere(conn: Connection, person: str) -> None:
    issue_allowance(conn, person, date(2026, 12, 1), Decimal("60.00"), None)  # bumps the version


def _died(conn: Connection, person: str) -> None:
    conn.execute(
        text("UPDATE population SET status = 'deceased', death_date = :d WHERE id_number = :i"),
        {"d": date(2026, 11, 1), "i": person},
    )
    bump_versions(conn, [person])


def _moved_away_by_import(conn: Connection, person: str) -> None:
    # an import changes rows and bumps only the registry epoch, not the person's version
    conn.execute(
        text("UPDATE population SET hukou_region = '320102' WHERE id_number = :i"), {"i": person}
    )
    conn.execute(text("UPDATE registry_state SET epoch = epoch + 1 WHERE id = 1"))


STALE = {
    "allowance-granted-since": Stale(
        "elderly-allowance",
        None,
        True,
        _allowance_granted_elsewhere,
        "approved",
        "rejected",
        ["ALREADY_RECEIVING"],
        lambda f: f["allowances"] == [{"status": "active"}],
        ("allowances", 1),
    ),
    "died-since": Stale(
        "senior-card-new",
        CARD_FORM,
        True,
        _died,
        "approved",
        "rejected",
        ["DECEASED"],
        lambda f: f["person"]["status"] == "deceased",
        ("senior_cards", 0),
    ),
    "registered-since": Stale(
        "elderly-allowance",
        None,
        False,
        lambda conn, person: register(conn, person),
        "referred",
        "approved",
        [],
        lambda f: (
            f["person"] == {"birth_date": "1940-04-04", "hukou_region": "341602", "status": "alive"}
        ),
        ("allowances", 1),
    ),
    "moved-away-by-import": Stale(
        "elderly-allowance",
        None,
        True,
        _moved_away_by_import,
        "approved",
        "rejected",
        ["NOT_LOCAL_HUKOU"],
        lambda f: f["person"]["hukou_region"] == "320102",
        ("allowances", 0),
    ),
}


@pytest.mark.parametrize("via", ["sync", "async"])
@pytest.mark.parametrize("case", list(STALE), ids=list(STALE))
def test_facts_cached_before_a_registry_change_are_decided_again_at_commit(
    container: Container, service: ApplicationService, case: str, via: str
) -> None:
    s = STALE[case]
    person = add_person(container) if s.registered else new_id()
    decider = container.policies.decider(s.item)
    names = decider.policy.fact_names
    cached_stamp, _ = container.facts.gather_unchecked(person, names)  # caches the bundle
    with write_transaction(container.engine) as conn:
        s.change(conn, person)  # no cache invalidation: only the stamp tells
    stamp, facts = container.facts.gather_unchecked(person, names)
    assert stamp == cached_stamp != container.sql_facts.stamp(person)  # the hot path sees it
    assert decider.decide(facts, TODAY, s.form)["decision"] == s.cached_decision
    before = write_paths(container)
    # PostgreSQL tries a group in one round trip, and sees there that the stamp moved,
    # unless a card's number must be drawn first (the writer has none at hand)
    card_first = (
        s.item == "senior-card-new"
        and s.cached_decision == "approved"
        and not len(container.recorder.spare_cards)
    )

    doc, created = apply_via(via, service, person, s.item, s.form)

    assert created and doc["decision"] == s.decision and codes(doc) == s.reasons
    at_once = postgres(container) and not card_first
    assert paths_since(container, before) == {"refused_at_once" if at_once else "checked": 1}
    stored = record(container, doc["application_id"])
    assert answered(container, doc["application_id"]) == doc and stored["decision"] == s.decision
    assert s.facts(stored["facts"])
    table, rows = s.issued
    assert issued(container, table, person) == rows


def test_facts_cached_at_the_current_stamp_are_decided_on_as_cached(
    container: Container, service: ApplicationService
) -> None:
    """The other half of the protocol (and the control for the test above): an entry read
    at the person's current stamp is what the decision uses; it is not read again."""
    person = add_person(container)
    stamp, bundle = container.sql_facts.gather_stamped(person, ALL_FACTS)
    assert bundle["allowances"] == []
    bundle["allowances"] = [
        {"status": "active", "start_date": date(2020, 1, 1), "monthly_amount": Decimal("60.00")}
    ]
    container.cache.put(person, stamp, bundle)
    doc, _ = service.apply("portal", "elderly-allowance", person, None)
    assert codes(doc) == ["ALREADY_RECEIVING"]


WAYS = [  # cards: see the tests of card numbers drawn ahead
    pytest.param("elderly-allowance", None, "at_once", id="allowance"),
    pytest.param("housing-fund-rent-withdrawal", None, "at_once", id="rent"),
]


@pytest.mark.parametrize(("item", "form", "way"), WAYS)
def test_a_fresh_application_alone_goes_the_way_its_item_allows(
    container: Container, service: ApplicationService, item: str, form: Any, way: str
) -> None:
    person = add_person(container)
    before = write_paths(container)
    doc, created = service.apply("portal", item, person, form, new_key())
    assert created and answered(container, doc["application_id"]) == doc
    assert paths_since(container, before) == {way if postgres(container) else "checked": 1}


# -- one issuance per person in a group -----------------------------------------------------

ISSUING = [
    pytest.param("elderly-allowance", None, "ALREADY_RECEIVING", "allowances", id="allowance"),
    pytest.param("senior-card-new", CARD_FORM, "CARD_ALREADY_VALID", "senior_cards", id="card"),
]


@pytest.mark.parametrize(("item", "form", "code", "table"), ISSUING)
def test_two_applications_of_one_person_in_one_group_issue_once(
    container: Container,
    service: ApplicationService,
    recorder: GroupRecorder,
    item: str,
    form: dict[str, Any] | None,
    code: str,
    table: str,
) -> None:
    person = add_person(container)
    group = [pending(container, service, person, item, form) for _ in range(2)]
    assert [p.decision["decision"] for p in group] == ["approved", "approved"]  # same cached facts
    with write_transaction(container.engine) as conn:
        first, second = recorder.record_group(conn, group)
    assert (first.decision, first.issued, first.created) == ("approved", True, True)
    assert (second.decision, second.issued, second.created) == ("rejected", False, True)
    assert second.redecided and codes(second.document) == [code]
    assert issued(container, table, person) == 1
    assert recorded(container, applicant_id=person) == 2
    assert answered(container, second.document["application_id"]) == second.document


@pytest.mark.parametrize(("item", "form", "code", "table"), ISSUING)
def test_a_group_from_the_committer_issues_once_per_person(
    container: Container,
    service: ApplicationService,
    item: str,
    form: dict[str, Any] | None,
    code: str,
    table: str,
) -> None:
    person = add_person(container)
    group = [pending(container, service, person, item, form) for _ in range(3)]
    committer = container.committer
    with writer_held(container, service):
        batches, entries = committer.batches, committer.entries
        futures = [committer.submit(p) for p in group]
    outcomes = results(futures)
    assert (committer.batches - batches, committer.entries - entries) == (2, 4)  # one group
    assert [o.decision for o in outcomes] == ["approved", "rejected", "rejected"]
    assert all(codes(o.document) == [code] for o in outcomes[1:])
    assert issued(container, table, person) == 1
    assert recorded(container, applicant_id=person) == 3


def test_a_refused_issuance_fails_only_its_own_application(
    container: Container, service: ApplicationService
) -> None:
    """A registry changed by hand without a version bump: the cache looks current, the
    decision approves, and issuing breaks a constraint. The group is retried one by one:
    the others are issued and recorded, the one at fault gets the conflict, nothing of it
    is written."""
    fine, faulty = add_person(container), add_person(container)
    group = [pending(container, service, p, "elderly-allowance") for p in (fine, faulty)]
    with write_transaction(container.engine) as conn:  # no bump_versions: the cache misses it
        conn.execute(
            text(
                "INSERT INTO allowances (id_number, status, start_date, monthly_amount, source) "
                "VALUES (:i, 'active', :d, 60.00, 'import')"
            ),
            {"i": faulty, "d": date(2026, 1, 1)},
        )
    committer = container.committer
    with writer_held(container, service):
        futures = [committer.submit(p) for p in group]
    assert futures[0].result(timeout=30).decision == "approved"
    with pytest.raises(IssuanceConflict, match=r"already.*active"):  # in either backend's words
        futures[1].result(timeout=30)
    assert issued(container, "allowances", fine) == 1
    assert issued(container, "allowances", faulty) == 1  # the hand-made one only
    assert recorded(container, applicant_id=fine) == 1
    assert recorded(container, applicant_id=faulty) == 0


def test_a_record_built_before_the_writer_is_the_one_the_writer_would_build(
    container: Container, service: ApplicationService
) -> None:
    person = add_person(container)
    early = pending(container, service, person, "elderly-allowance-certification")
    assert early.prebuilt is not None
    late = pending(container, service, person, "elderly-allowance-certification")
    late.prebuilt = None  # the writer builds this one
    outcomes = results([container.committer.submit(p) for p in (early, late)])
    stored = [record(container, o.document["application_id"]) for o in outcomes]
    for row, outcome in zip(stored, outcomes, strict=True):
        assert answered(container, row["id"]) == outcome.document
        assert row["timings"]["total_ms"] >= row["timings"]["decide_ms"]
        for volatile in ("id", "document", "decided_at", "timings"):  # differ by design
            row.pop(volatile)
    assert stored[0] == stored[1]
    documents = [
        {k: v for k, v in o.document.items() if k not in ("application_id", "decided_at")}
        for o in outcomes
    ]
    assert documents[0] == documents[1]


# -- apply_async answers what apply answers ---------------------------------------------------

SHAPES: dict[str, tuple[str, dict[str, Any] | None, Callable[[Container], str]]] = {
    "approved-with-card": ("senior-card-new", CARD_FORM, lambda c: add_person(c)),
    "rejected": ("elderly-allowance", None, lambda c: add_person(c, YOUNG)),
    "referred": ("elderly-allowance", None, lambda c: new_id()),
}


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without what differs between two applications by design."""
    result = {k: v for k, v in doc["result"].items() if k != "card_no"}
    return {**{k: v for k, v in doc.items() if k != "application_id"}, "result": result}


@pytest.mark.parametrize("case", list(SHAPES))
def test_apply_async_gives_the_document_apply_gives(
    container: Container, service: ApplicationService, case: str
) -> None:
    item, form, applicant = SHAPES[case]
    sync_doc, sync_created = service.apply("portal", item, applicant(container), form)
    async_doc, async_created = asyncio.run(
        apply_on_a_loop(service, "portal", item, applicant(container), form)
    )
    assert sync_created and async_created
    assert list(async_doc) == list(sync_doc)
    assert comparable(async_doc) == comparable(sync_doc)
    assert set(async_doc["result"]) == set(sync_doc["result"])
    assert json.loads(json.dumps(async_doc)) == async_doc  # JSON values only
    assert len(async_doc["application_id"]) == 32
    assert service.get(async_doc["application_id"]) == async_doc
    assert answered(container, async_doc["application_id"]) == async_doc
    assert list(answered(container, async_doc["application_id"])) == list(async_doc)


def test_an_issuing_application_on_a_loop_drops_the_persons_cache_entry(
    container: Container, service: ApplicationService
) -> None:
    """The entry an issuance made old is dropped from every tier (Redis too, on the
    PostgreSQL container) by the writer's hook on the caller's loop, before that loop
    closes its clients; an application that issued nothing leaves its entry."""
    issuing, quiet = add_person(container), add_person(container, YOUNG)
    for someone in (issuing, quiet):  # both cached, as a warmed cache has them
        container.facts.gather_unchecked(someone, ALL_FACTS)
        assert container.cache.peek(someone) is not None

    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            card, _ = await service.apply_async("portal", "senior-card-new", issuing, CARD_FORM)
            rejected, _ = await service.apply_async("portal", "elderly-allowance", quiet, None)
            return card, rejected
        finally:
            await container.aclose_loop_clients()

    card, rejected = asyncio.run(both())
    assert card["decision"] == "approved" and card["result"]["card_no"]
    assert rejected["decision"] == "rejected"
    assert container.cache.peek(issuing) is None
    assert container.cache.peek(quiet) is not None
    far = getattr(container.cache, "far", None)
    if far is not None:  # Redis, shared by the other workers
        assert far.peek(issuing) is None and far.peek(quiet) is not None
