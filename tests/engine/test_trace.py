"""A trace says what the decision found; the policy's own text is added back for readers."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from approval_service.authoring.cases import Case, case_paths, load_case_file
from approval_service.engine.backends import BACKENDS
from approval_service.engine.trace import with_conditions
from approval_service.policy.loader import load_policy_folder
from approval_service.policy.model import Policy

ROOT = Path(__file__).resolve().parents[2]
POLICIES: dict[str, Policy] = load_policy_folder(ROOT / "rules")
CASES: list[Case] = [
    case
    for path in case_paths(ROOT / "rules" / "cases")
    for case in load_case_file(path, POLICIES).cases
]
FINDINGS = {"code", "outcome", "values", "absent"}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_trace_entry_holds_only_what_the_decision_found(backend: str) -> None:
    for item, policy in sorted(POLICIES.items()):
        decider = BACKENDS[backend](policy)
        for case in (c for c in CASES if c.item == item):
            trace = decider.decide(case.facts, case.as_of, case.form, trace=True)["trace"]
            assert [e["code"] for e in trace] == [c.code for c in policy.conditions], case.where
            for entry in trace:
                assert set(entry) <= FINDINGS, case.where
                assert ("absent" in entry) == (entry["outcome"] == "skipped"), case.where


def test_with_conditions_adds_each_conditions_text_and_consequence() -> None:
    policy = POLICIES["elderly-allowance"]
    case = next(c for c in CASES if c.item == policy.item and c.expect.decision == "rejected")
    trace = BACKENDS["compiled"](policy).decide(case.facts, case.as_of, case.form, trace=True)[
        "trace"
    ]
    before = copy.deepcopy(trace)
    shown = with_conditions(policy, trace)
    assert trace == before, "the decider's own trace is left as it was"
    assert [list(e)[:3] for e in shown] == [["code", "require", "on_fail"]] * len(trace)
    for entry, found, condition in zip(shown, trace, policy.conditions, strict=True):
        assert entry["require"] == condition.require.source
        assert entry["on_fail"] == condition.on_fail
        assert {k: v for k, v in entry.items() if k not in {"require", "on_fail"}} == found
