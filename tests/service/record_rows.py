"""Rows of the decision-record tables, whole, as the group writer inserts them."""

from __future__ import annotations

import itertools
import secrets
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from data_lookups.id_numbers import make_id_number, mask_id

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
OLD = date(1940, 4, 4)  # 86 on NOW: old enough for the allowance and a type B card

_seq = itertools.count(1)


def new_id(birth: date = OLD) -> str:
    """A fresh valid ID number, not in the registry (unique within the test run)."""
    return make_id_number("341602", birth, next(_seq))


def record_row(
    applicant: str, *, channel: str = "portal", key: str | None = None
) -> dict[str, Any]:
    """An approved allowance's decision record, every column given."""
    application_id = secrets.token_hex(16)
    return {
        "id": application_id,
        "channel": channel,
        "idempotency_key": key,
        "request_hash": None if key is None else secrets.token_hex(32),
        "item": "elderly-allowance",
        "applicant_id": applicant,
        "applicant_masked": mask_id(applicant),
        "policy_version": "2025.1",
        "policy_sha256": "cd" * 32,
        "business_date": NOW.date(),
        "decision": "approved",
        "reasons": [],
        "result": {"amount": Decimal("60.00")},
        "facts": {},
        "trace": [],
        "form": None,
        "timings": {},
        "decided_at": NOW,
        "deadline": None,
        "review_state": None,
        "document": {"application_id": application_id},
    }


def outbox_row(text: str, recipient_id: str, application_id: str | None = None) -> dict[str, Any]:
    """The notification of a decision (of a made-up application unless one is given)."""
    application_id = application_id or secrets.token_hex(16)
    return {
        "dedup_key": f"{application_id}:decided",
        "application_id": application_id,
        "recipient_id": recipient_id,
        "text": text,
        "created_at": NOW,
        "next_attempt_at": NOW,
        "attempts": 0,
    }
