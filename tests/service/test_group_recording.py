"""Recording in groups: stale cached facts decided again at commit, one issuance per person,
repeated Idempotency-Keys answered from the first record, and the group statements
(``group_store``) alike on PostgreSQL (straight through psycopg) and SQLite (SQLAlchemy Core).

Every test runs on both backends: PostgreSQL with the Redis fact cache, SQLite with the
in-process one.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    exc,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from approval_service.errors import IssuanceConflict
from approval_service.service import group_store
from approval_service.service.applications import ApplicationService
from approval_service.service.clock import FixedClock
from approval_service.service.container import Container
from approval_service.service.documents import dumps
from approval_service.service.group_recording import GroupRecorder
from approval_service.service.pending import IdempotencyMismatch
from approval_service.service.records import applications, outbox
from approval_service.settings import Settings
from data_lookups.database import write_transaction
from data_lookups.facts import ALL_FACTS
from data_lookups.issuance import bump_versions, issue_allowance
from data_lookups.models import Person, Photo

from .record_rows import NOW, OLD, new_id, outbox_row, record_row

ROOT = Path(__file__).resolve().parents[2]
ZONE = ZoneInfo("Asia/Shanghai")
TODAY = NOW.date()
YOUNG = date(2000, 1, 1)
CARD_FORM = {"mailing_address": "亳州市谯城区"}


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def container(
    request: pytest.FixtureRequest,
    pg_database: Callable[[str], str],
    redis_url: str,
    redis_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Container]:
    if request.param == "postgresql":
        settings = Settings(
            database_url=pg_database("group_recording"),
            redis_url=redis_url,
            redis_prefix=f"{redis_prefix}group-recording:",
            rules_dir=ROOT / "rules",
        )
    else:
        folder = tmp_path_factory.mktemp("group_recording")
        settings = Settings(
            database_url=f"sqlite:///{folder}/miaopi.sqlite3",
            redis_url=None,
            rules_dir=ROOT / "rules",
        )
    built = Container.build(settings, clock=FixedClock(ZONE, NOW))
    yield built
    built.close()


@pytest.fixture(scope="module")
def service(container: Container) -> ApplicationService:
    return ApplicationService(container)


@pytest.fixture(scope="module")
def recorder(container: Container) -> GroupRecorder:
    return GroupRecorder(container)


def postgres(container: Container) -> bool:
    return container.engine.dialect.name == "postgresql"


PATHS = ("at_once", "checked", "refused_at_once")


def write_paths(container: Container) -> dict[str, float]:
    """How many groups went each way so far (the miaopi_write_groups counter)."""
    sample = container.metrics.registry.get_sample_value
    return {path: sample("miaopi_write_groups_total", {"path": path}) or 0.0 for path in PATHS}


def paths_since(container: Container, before: dict[str, float]) -> dict[str, float]:
    now = write_paths(container)
    return {path: now[path] - before[path] for path in PATHS if now[path] != before[path]}


def add_person(container: Container, birth: date = OLD, **columns: Any) -> str:
    """A resident (with a photo) registered the way issuance does: rows plus a version bump."""
    id_number = new_id(birth)
    with write_transaction(container.engine) as conn:
        register(conn, id_number, birth, **columns)
    return id_number


def register(conn: Connection, id_number: str, birth: date = OLD, **columns: Any) -> None:
    values: dict[str, Any] = {
        "id_number": id_number,
        "name": "测试",
        "gender": "M",
        "birth_date": birth,
        "hukou_region": "341602",
        "status": "alive",
        "last_seen_date": TODAY,
    }
    conn.execute(insert(Person).values(**{**values, **columns}))
    conn.execute(insert(Photo).values(id_number=id_number, photo_sha256="ab" * 32))
    bump_versions(conn, [id_number])


def scalar(container: Container, sql: str, **params: Any) -> Any:
    with container.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def record(container: Container, application_id: str) -> dict[str, Any]:
    with container.engine.connect() as conn:
        row = (
            conn.execute(select(applications).where(applications.c.id == application_id))
            .mappings()
            .one()
        )
    return dict(row)


def codes(doc: dict[str, Any]) -> list[str]:
    return [r["code"] for r in doc["reasons"]]


def pending(
    container: Container,
    service: ApplicationService,
    applicant: str,
    item: str,
    form: dict[str, Any] | None = None,
    key: str | None = None,
    channel: str = "portal",
) -> Any:
    """An application decided on the facts as cached, waiting to be recorded (as apply makes)."""
    decider, app = service._prepare(item, applicant, form)
    stamp, facts = container.facts.gather_unchecked(app.applicant_id, decider.policy.fact_names)
    return service._decide(channel, decider, app, key, time.perf_counter(), stamp, facts)


def apply_via(
    via: str,
    service: ApplicationService,
    applicant: str,
    item: str,
    form: dict[str, Any] | None = None,
    key: str | None = None,
    channel: str = "portal",
) -> tuple[dict[str, Any], bool]:
    if via == "async":
        return asyncio.run(service.apply_async(channel, item, applicant, form, key))
    return service.apply(channel, item, applicant, form, key)


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

    doc, created = apply_via(via, service, person, s.item, s.form)

    assert created and doc["decision"] == s.decision and codes(doc) == s.reasons
    # PostgreSQL tries a group in one round trip, unless it draws a card number first,
    # and sees there that the stamp moved
    card_first = s.item == "senior-card-new" and s.cached_decision == "approved"
    at_once = postgres(container) and not card_first
    assert paths_since(container, before) == {"refused_at_once" if at_once else "checked": 1}
    stored = record(container, doc["application_id"])
    assert stored["document"] == doc and stored["decision"] == s.decision
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


WAYS = [
    pytest.param("elderly-allowance", None, "at_once", id="allowance"),
    pytest.param("housing-fund-rent-withdrawal", None, "at_once", id="rent"),
    pytest.param("senior-card-new", CARD_FORM, "checked", id="card"),  # its number drawn first
]


@pytest.mark.parametrize(("item", "form", "way"), WAYS)
def test_a_fresh_application_alone_goes_the_way_its_item_allows(
    container: Container, service: ApplicationService, item: str, form: Any, way: str
) -> None:
    person = add_person(container)
    before = write_paths(container)
    doc, created = service.apply("portal", item, person, form, new_key())
    assert created and record(container, doc["application_id"])["document"] == doc
    assert paths_since(container, before) == {way if postgres(container) else "checked": 1}


# -- one issuance per person in a group -----------------------------------------------------

ISSUING = [
    pytest.param("elderly-allowance", None, "ALREADY_RECEIVING", "allowances", id="allowance"),
    pytest.param("senior-card-new", CARD_FORM, "CARD_ALREADY_VALID", "senior_cards", id="card"),
]


def issued(container: Container, table: str, person: str) -> int:
    return int(scalar(container, f"SELECT count(*) FROM {table} WHERE id_number = :i", i=person))


def recorded(container: Container, **where: str) -> int:
    column, value = next(iter(where.items()))
    return int(scalar(container, f"SELECT count(*) FROM applications WHERE {column} = :v", v=value))


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
    assert record(container, second.document["application_id"])["document"] == second.document


@contextmanager
def writer_held(container: Container, service: ApplicationService) -> Iterator[None]:
    """While inside, the group-commit writer is stuck on an application of its own; what is
    submitted meanwhile is committed as one group when the block ends."""
    blocker = add_person(container, YOUNG)
    ahead_item = pending(container, service, blocker, "elderly-allowance")
    committer = container.committer
    with write_transaction(container.engine) as conn:  # SQLite: holds the write lock
        if postgres(container):
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:i, 0))"), {"i": blocker}
            )
        ahead = committer.submit(ahead_item)
        deadline = time.monotonic() + 10
        while not writer_waits(container):
            assert time.monotonic() < deadline, "the writer never took the blocked entry"
            time.sleep(0.01)
        yield
    ahead.result(timeout=30)


def writer_waits(container: Container) -> bool:
    if postgres(container):
        waiting = scalar(
            container, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        return bool(waiting)
    if not container.committer._queue.empty():
        return False
    time.sleep(0.2)  # dequeued; the writer is in BEGIN IMMEDIATE, waiting for the lock
    return True


def results(futures: Sequence[Future[Any]]) -> list[Any]:
    return [f.result(timeout=30) for f in futures]


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
        assert row["document"] == outcome.document
        assert row["timings"]["total_ms"] >= row["timings"]["decide_ms"]
        for volatile in ("id", "document", "decided_at", "timings"):  # differ by design
            row.pop(volatile)
    assert stored[0] == stored[1]
    documents = [
        {k: v for k, v in o.document.items() if k not in ("application_id", "decided_at")}
        for o in outcomes
    ]
    assert documents[0] == documents[1]


# -- repeated Idempotency-Keys ------------------------------------------------------------------


def new_key() -> str:
    return f"key-{secrets.token_hex(6)}"


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
    assert paths_since(container, before) == {
        "refused_at_once" if postgres(container) else "checked": 1  # the key is taken
    }
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


# -- group_store: the same on PostgreSQL (psycopg pipelines) and SQLite (SQLAlchemy Core) -------

FACTS: dict[str, Any] = {
    "person": {"birth_date": date(1940, 4, 4), "hukou_region": "341602", "status": "alive"},
    "allowances": [],
    "photo": None,
    "fund": {"balance": Decimal("1234.50"), "last_rent_withdrawal_date": None},
}
AWKWARD = '制表符\t换行\n反斜杠\\ 引号" \\N 结束'  # separators, escapes and a NULL marker


def application_row(channel: str, key: str | None, **changes: Any) -> dict[str, Any]:
    """A referral's record with awkward text and nulls inside its JSON."""
    row = record_row(new_id(), channel=channel, key=key)
    row.update(
        decision="referred",
        reasons=[{"code": "PERSON_NOT_FOUND", "message": AWKWARD, "basis": None}],
        result={},
        facts=FACTS,
        trace=[{"code": "PERSON_NOT_FOUND", "passed": False, "values": {"x": None}}],
        form={"mailing_address": "亳州市谯城区", "note": None},
        timings={"gather_ms": 0.25, "decide_ms": 0.01, "total_ms": 1.5},
        document={"application_id": row["id"], "result": {"amount": Decimal("60.00")}, "n": [1, 2]},
    )
    row.update(changes)
    return row


JSON_COLUMNS = ["reasons", "result", "facts", "trace", "form", "timings", "document"]
NULLABLE = ["idempotency_key", "request_hash", "deadline", "review_state", "officer", "reviewed_at"]


def as_json(value: Any) -> Any:
    """What a JSON column holds after a round trip: dates ISO, money strings, null kept."""
    return orjson.loads(dumps(value))


def nulls(container: Container, table: str, columns: Sequence[str], row_id: str) -> list[bool]:
    """Which of the columns hold SQL NULL."""
    tests = ", ".join(f"{c} IS NULL" for c in columns)
    with container.engine.connect() as conn:
        found = conn.execute(text(f"SELECT {tests} FROM {table} WHERE id = :i"), {"i": row_id})
        return [bool(n) for n in found.one()]


def insert_rows(conn: Connection, rows_by_table: dict[Table, list[dict[str, Any]]]) -> None:
    """Rows prepared (JSON encoded on PostgreSQL) and inserted, as the group writer does."""
    pg = conn.dialect.name == "postgresql"
    group_store.insert_prepared(
        conn,
        [group_store.prepare_row(pg, t, row) for t, rows in rows_by_table.items() for row in rows],
    )


@pytest.fixture(params=["insert", "copy"])
def insert_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """PostgreSQL inserts a small group's rows one INSERT each, a large group's by COPY:
    the tests that take this fixture run both ways, whatever the number of rows."""
    copy_from = 1 if request.param == "copy" else 10**9
    monkeypatch.setattr(group_store, "COPY_FROM", copy_from)
    return str(request.param)


def test_inserted_rows_round_trip_json_and_keep_none_null(
    container: Container, insert_path: str
) -> None:
    rows = [
        application_row("portal", new_key()),
        application_row("portal", None, deadline=date(2026, 11, 26), review_state="open"),
    ]
    message = outbox_row(AWKWARD, new_id())
    with write_transaction(container.engine) as conn:  # both tables at once, as a group does
        insert_rows(conn, {applications: rows, outbox: [message]})
        insert_rows(conn, {applications: [], outbox: []})  # nothing to do
    for row in rows:
        stored = record(container, row["id"])
        for column in JSON_COLUMNS:
            assert stored[column] == as_json(row[column]), column
        for column in ("channel", "idempotency_key", "request_hash", "applicant_id", "deadline"):
            assert stored[column] == row[column], column
        assert stored["business_date"] == TODAY
        assert stored["decided_at"] == (NOW if postgres(container) else NOW.replace(tzinfo=None))
        assert nulls(container, "applications", NULLABLE, row["id"]) == [
            row.get(c) is None for c in NULLABLE
        ]
    columns = ["sent_at", "last_error"]
    assert nulls(container, "outbox", columns, message["id"]) == [True, True]
    with container.engine.connect() as conn:
        text_, attempts = conn.execute(
            text("SELECT text, attempts FROM outbox WHERE id = :i"), {"i": message["id"]}
        ).one()
    assert (text_, attempts) == (AWKWARD, 0)


def test_inserting_rows_raises_sqlalchemy_integrity_error(
    container: Container, insert_path: str
) -> None:
    """apply() answers a lost idempotency race by catching SQLAlchemy's IntegrityError."""
    key = new_key()
    with write_transaction(container.engine) as conn:
        insert_rows(conn, {applications: [application_row("portal", key)]})
    twin = [application_row("portal", None), application_row("portal", key)]
    message = outbox_row("never sent", new_id())
    with pytest.raises(exc.IntegrityError), write_transaction(container.engine) as conn:
        insert_rows(conn, {outbox: [message], applications: twin})
    assert recorded(container, idempotency_key=key) == 1  # nothing of the failed group stayed
    assert recorded(container, id=twin[0]["id"]) == 0
    assert scalar(container, "SELECT count(*) FROM outbox WHERE id = :i", i=message["id"]) == 0


def test_earlier_answers_finds_exactly_the_recorded_pairs(container: Container) -> None:
    key, other = new_key(), new_key()
    portal = application_row("portal", key)
    counter = application_row("counter", key, document={"answer": "counter", "n": None})
    unkeyed = application_row("portal", None)
    with write_transaction(container.engine) as conn:
        insert_rows(conn, {applications: [portal, counter, unkeyed]})
    asked = [
        ("portal", key),
        ("portal", key),  # asked twice
        ("counter", key),
        ("portal", other),  # never used
        ("elsewhere", key),  # used, but by other channels
    ]
    with write_transaction(container.engine) as conn:
        found = group_store.earlier_answers(conn, asked)
        assert group_store.earlier_answers(conn, []) == {}
    assert found == {
        ("portal", key): (portal["request_hash"], as_json(portal["document"])),
        ("counter", key): (counter["request_hash"], as_json(counter["document"])),
    }


def test_open_group_locks_the_people_and_reads_stamps_and_first_answers(
    container: Container, service: ApplicationService
) -> None:
    versioned, unregistered = add_person(container), new_id()
    key = new_key()
    service.apply("portal", "elderly-allowance", versioned, None, key)  # issues: version 2
    people = [versioned, unregistered, versioned]
    keys = [("portal", key), ("portal", new_key())]
    with write_transaction(container.engine) as conn:
        stamps, earlier = group_store.open_group(conn, container.sql_facts, people, keys)
        assert (stamps, earlier) == (
            container.sql_facts.stamps_in(conn, people),
            group_store.earlier_answers(conn, keys),
        )
        if postgres(container):  # held by this transaction: another one cannot take them
            assert not any(try_lock(container, p) for p in (versioned, unregistered))
    assert set(stamps) == {versioned, unregistered}
    assert stamps[versioned].version == 2 and stamps[unregistered].version == 0
    assert stamps[versioned].epoch == stamps[unregistered].epoch
    assert list(earlier) == [("portal", key)]
    if postgres(container):  # released with the transaction
        assert all(try_lock(container, p) for p in (versioned, unregistered))


def try_lock(container: Container, person: str) -> bool:
    with container.engine.connect() as conn:
        got = conn.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtextextended(:i, 0))"), {"i": person}
        ).scalar()
        conn.rollback()
    return bool(got)


def test_none_in_a_json_column_is_stored_as_sqlalchemy_stores_it(
    container: Container, insert_path: str
) -> None:
    """The psycopg path writes what SQLAlchemy Core writes: a None in a JSON column is JSON
    null (SQLAlchemy's default), in any other column SQL NULL. (The first COPY version wrote
    SQL NULL for JSON on PostgreSQL only.)"""
    metadata = MetaData()
    name = f"probe_{secrets.token_hex(4)}"
    fast, core = (
        Table(
            f"{name}_{suffix}",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("doc", JSON().with_variant(JSONB(), "postgresql")),
            Column("note", String(20)),
        )
        for suffix in ("fast", "core")
    )
    rows: list[dict[str, Any]] = [
        {"id": 1, "doc": None, "note": None},
        {"id": 2, "doc": {"a": None}, "note": "x"},
    ]
    metadata.create_all(container.engine)
    try:
        with write_transaction(container.engine) as conn:
            insert_rows(conn, {fast: rows})
            conn.execute(insert(core), rows)
        stored: dict[str, Any] = {}
        for table in (fast, core):
            with container.engine.connect() as conn:
                stored[table.name] = (
                    conn.execute(
                        text(f"SELECT id, doc IS NULL, note IS NULL FROM {table.name} ORDER BY id")
                    ).all(),
                    conn.execute(select(table.c.doc).order_by(table.c.id)).scalars().all(),
                )
    finally:
        metadata.drop_all(container.engine)
    assert stored[fast.name] == stored[core.name]
    checks, docs = stored[fast.name]
    assert docs == [None, {"a": None}]
    assert [(i, bool(d), bool(n)) for i, d, n in checks] == [(1, False, True), (2, False, False)]


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
        service.apply_async("portal", item, applicant(container), form)
    )
    assert sync_created and async_created
    assert list(async_doc) == list(sync_doc)
    assert comparable(async_doc) == comparable(sync_doc)
    assert set(async_doc["result"]) == set(sync_doc["result"])
    assert json.loads(json.dumps(async_doc)) == async_doc  # JSON values only
    assert len(async_doc["application_id"]) == 32
    assert service.get(async_doc["application_id"]) == async_doc
    assert record(container, async_doc["application_id"])["document"] == async_doc
