"""Decision records (留痕): every application as it was decided, and the policy texts.

A record keeps what is needed to explain the decision again later exactly as it
was made: the policy version (its full text is kept by sha256 in
``policy_versions``), the business date, the facts read, the trace (each
condition's code, outcome and the values it read: its text and what its failure
does are in that policy text, not repeated in every record), the decision, the
result and the timings. The response document as first returned (replayed for a
repeated ``Idempotency-Key``) is made from those columns
(:func:`~approval_service.service.documents.recorded_document`); records written
before migration 0017 keep it in ``document`` as well.

The applicant's ID number is stored (an officer's approval must issue to the
right person), next to its masked form, which is what logs and lists show.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Date,
    DateTime,
    Index,
    Integer,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from data_lookups.models import Base

#: ``json`` on PostgreSQL, not ``jsonb``: a record's JSON is written on the hot path and
#: read back whole, never searched inside. ``json`` keeps the text as sent (checked,
#: not converted), which costs PostgreSQL about half the CPU per record of ``jsonb``
#: (migration 0012, README "Load test"). A typical record is still just over 2 kB, where
#: PostgreSQL would start compressing it on insert: the table's ``toast_tuple_target``
#: keeps records up to 4 kB inline and uncompressed (migration 0014).
JSONType = JSON()

#: the review queue's filter, and its partial index's predicate: a literal, not a
#: parameter, since the generic plan of a prepared statement cannot use a partial index
#: whose predicate depends on a parameter's value
OPEN_REFERRAL = "review_state = 'open'"

applications = Table(
    "applications",
    Base.metadata,
    Column("id", String(40), primary_key=True),
    Column("channel", String(64), nullable=False),
    Column("idempotency_key", String(200)),
    Column("request_hash", String(64)),
    Column("item", String(64), nullable=False),
    Column("applicant_id", String(18), nullable=False),
    Column("applicant_masked", String(18), nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("policy_sha256", String(64), nullable=False),
    Column("business_date", Date, nullable=False),
    Column("decision", String(10), nullable=False),
    Column("reasons", JSONType, nullable=False),
    Column("result", JSONType, nullable=False),
    Column("facts", JSONType, nullable=False),
    Column("trace", JSONType, nullable=False),
    Column("form", JSONType, nullable=False),
    Column("timings", JSONType, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("deadline", Date),
    Column("review_state", String(10)),  # open | approved | rejected (referred cases only)
    Column("officer", String(64)),
    Column("reviewed_at", DateTime(timezone=True)),
    # the response document of records written before migration 0017; NULL since, the
    # columns above holding it (documents.recorded_document)
    Column("document", JSONType),
    UniqueConstraint("channel", "idempotency_key", name="uq_applications_idempotency"),
    # only what a query uses: every index is written by every decision (migration 0016)
    Index(
        "ix_applications_open_referrals",
        "deadline",
        "decided_at",
        postgresql_where=text(OPEN_REFERRAL),
        sqlite_where=text(OPEN_REFERRAL),
    ),
    Index("ix_applications_business_date", "business_date"),
)

policy_versions = Table(
    "policy_versions",
    Base.metadata,
    Column("sha256", String(64), primary_key=True),
    Column("item", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("source", Text, nullable=False),
    Column("first_seen", DateTime(timezone=True), nullable=False),
)


def get_application(
    conn: Connection, application_id: str, for_update: bool = False
) -> dict[str, Any] | None:
    query = select(applications).where(applications.c.id == application_id)
    if for_update:
        query = query.with_for_update()
    found = conn.execute(query).mappings().first()
    return None if found is None else dict(found)


def update_application(conn: Connection, application_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(applications).where(applications.c.id == application_id).values(**values))


def open_referrals_statement() -> Select[Any]:
    """The review queue, in the order of its partial index (migration 0016)."""
    return (
        select(
            applications.c.id,
            applications.c.item,
            applications.c.applicant_masked,
            applications.c.deadline,
            applications.c.decided_at,
            applications.c.reasons,
            applications.c.channel,
        )
        .where(text(OPEN_REFERRAL))
        .order_by(applications.c.deadline, applications.c.decided_at)
    )


def open_referrals(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(open_referrals_statement()).mappings()]


def remember_policy(
    conn: Connection, sha256: str, item: str, version: str, source: str, now: datetime
) -> None:
    """Keep a policy's text under its sha256, once. Several workers (or hosts) start on
    a new policy at the same moment: each inserts unless the row is there, and one that
    finds another's row being inserted waits for it and then does nothing."""
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(
        dialect_insert(policy_versions)
        .values(sha256=sha256, item=item, version=version, source=source, first_seen=now)
        .on_conflict_do_nothing(index_elements=[policy_versions.c.sha256])
    )


def policy_source(conn: Connection, sha256: str) -> str | None:
    found = conn.execute(
        select(policy_versions.c.source).where(policy_versions.c.sha256 == sha256)
    ).first()
    return None if found is None else str(found[0])


def applications_between(conn: Connection, start: date, end: date) -> list[dict[str, Any]]:
    """Applications decided on business dates in [start, end], for statistics."""
    rows = conn.execute(
        select(
            applications.c.item,
            applications.c.decision,
            applications.c.business_date,
            applications.c.timings,
            applications.c.review_state,
            applications.c.deadline,
            applications.c.reviewed_at,
        ).where(applications.c.business_date >= start, applications.c.business_date <= end)
    ).mappings()
    return [dict(r) for r in rows]


outbox = Table(
    "outbox",
    Base.metadata,
    # the message's identity: an application's event, sent at least once, never twice
    # (the webhook's Idempotency-Key); the primary key since migration 0018
    Column("dedup_key", String(120), primary_key=True),
    Column("application_id", String(40), nullable=False),
    Column("recipient_id", String(18), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Column("last_error", Text),
    Index("ix_outbox_due", "sent_at", "next_attempt_at"),
)
