"""Accepted and rejected condition expressions, checked against declared facts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from approval_service.errors import PolicySyntaxError, PolicyTypeError
from approval_service.policy.model import Policy

Make = Callable[[str], Policy]


@pytest.mark.parametrize(
    ("require", "reads"),
    [
        ("person is present", set()),
        ('person.status != "deceased"', {"person"}),
        ("age_on(person.birth_date, today) >= min_age", {"person"}),
        ('any(c in cards where c.status == "valid" and c.expires_on >= today)', set()),
        (
            "count(c in cards where c.cancelled_on is present"
            " and c.cancelled_on >= add_days(today, -365)) < 2",
            set(),
        ),
        (
            "fund.last_rent_withdrawal_date is absent"
            " or today >= add_months(fund.last_rent_withdrawal_date, 3)",
            {"fund"},
        ),
        ("fund.balance >= 0.01 and fund.balance * 2 <= limit", {"fund"}),
        ('person is present and person.status == "alive"', set()),
        ('person.status in ["alive", "unknown"]', {"person"}),
        ("all(c in cards where c.expires_on <= add_days(today, 90))", set()),
        (
            "(if person.last_seen_date is present then person.last_seen_date else today) <= today",
            {"person"},
        ),
        ("min(fund.balance, 3 * limit) > 0", {"fund"}),
    ],
)
def test_accepted(policy_with: Make, require: str, reads: set[str]) -> None:
    policy = policy_with(require)
    assert policy.conditions[0].require.reads == frozenset(reads)


@pytest.mark.parametrize(
    ("require", "message", "suggestion"),
    [
        ("persn.status == 1", "unknown name `persn`", "did you mean `person`?"),
        ('person.stauts == "x"', "has no field `stauts`", "did you mean `status`?"),
        (
            "age_on(person.birth_dat, today) > 1",
            "has no field `birth_dat`",
            "did you mean `birth_date`?",
        ),
        ("min_ag > 1", "unknown name `min_ag`", "did you mean `min_age`?"),
        ("person.status == 80", "cannot compare text with int", None),
        ("person.last_seen_date >= today", "may be absent", "is absent or"),
        ("add_months(fund.last_rent_withdrawal_date, 3) <= today", "may be absent", None),
        ("person.birth_date + 1 > today", "dates do not take +", "add_days"),
        ("person.status", "must be true or false", None),
        ('person.status > "a"', "cannot order", None),
        ("fund.balance // 2 > 0", "// divides whole numbers", "use /"),
        ("person == 1", "whole record", "person is present"),
        ("today is present", "never absent", None),
        (
            "ag_on(person.birth_date, today) > 1",
            "unknown function `ag_on`",
            "did you mean `age_on`?",
        ),
        ("age_on(person.birth_date) > 1", "takes 2 arguments", None),
        ('any(c in person.status where c == "x")', "goes over a list", None),
        ('"a" in "abc"', "needs a list", None),
        (
            "max(c.expires_on for c in cards) <= today",
            "`max(c.expires_on for c in cards)` may be absent",
            "under `define:`",
        ),
        ('if person.status == "a" then 1 else "b"', "branches of if differ", None),
    ],
)
def test_rejected_with_location_and_suggestion(
    policy_with: Make, require: str, message: str, suggestion: str | None
) -> None:
    with pytest.raises((PolicyTypeError, PolicySyntaxError)) as info:
        policy_with(require)
    error = info.value
    assert message in error.message
    if suggestion is not None:
        assert error.suggestion is not None and suggestion in error.suggestion
    assert error.location is not None
    assert error.location.file == "test.yaml" and error.location.line == 38


def test_error_column_points_into_the_expression(policy_with: Make) -> None:
    with pytest.raises(PolicyTypeError) as info:
        policy_with('person.stauts == "x"')
    # `    require: '` is 14 characters, then `person.` : the column of the problem node
    assert info.value.location is not None and info.value.location.column == 15


def test_narrowing_does_not_leak_past_or(policy_with: Make) -> None:
    with pytest.raises(PolicyTypeError, match="may be absent"):
        policy_with("person.last_seen_date is present or person.last_seen_date >= today")
