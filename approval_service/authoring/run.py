"""Running authors' cases on the engine backends and saying exactly what differs.

One :class:`Outcome` per (case, backend). A failure names the field
(``decision``, ``reasons``, ``result.monthly_amount``) with the expected and the
actual value, as the author would write them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from approval_service.authoring.cases import Case
from approval_service.authoring.values import show
from approval_service.engine.backends import BACKENDS, Decider
from approval_service.errors import MiaopiError
from approval_service.policy.model import Policy

ABSENT = "(absent)"


@dataclass(frozen=True)
class Mismatch:
    field: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.field}: expected {self.expected}, got {self.actual}"


@dataclass(frozen=True)
class Outcome:
    case: Case
    backend: str
    mismatches: tuple[Mismatch, ...] = ()
    error: str | None = None  # the engine raised instead of deciding

    @property
    def passed(self) -> bool:
        return not self.mismatches and self.error is None

    def describe(self) -> str:
        """Several lines: which case, where, on which backend, and every difference."""
        head = f"{self.case.item}: {self.case.name} ({self.case.where}) [{self.backend}]"
        if self.error is not None:
            return f"{head}\n  error: {self.error}"
        return "\n".join([head, *(f"  {m}" for m in self.mismatches)])


def compare(case: Case, doc: Mapping[str, Any]) -> list[Mismatch]:
    """Every field where the decision document differs from the case's expectation."""
    expect = case.expect
    out: list[Mismatch] = []
    actual_codes = [r["code"] for r in doc.get("reasons", [])]
    if doc.get("decision") != expect.decision:
        detail = f" {show(actual_codes)}" if actual_codes else ""
        out.append(Mismatch("decision", expect.decision, f"{doc.get('decision')}{detail}"))
    if expect.reasons is not None and list(expect.reasons) != actual_codes:
        out.append(Mismatch("reasons", show(expect.reasons), show(actual_codes)))
    result = doc.get("result") or {}
    for name, wanted in expect.result.items():
        got = result.get(name, ABSENT)
        if got is ABSENT or got != wanted or isinstance(got, bool) != isinstance(wanted, bool):
            out.append(
                Mismatch(f"result.{name}", show(wanted), ABSENT if got is ABSENT else show(got))
            )
    return out


def run_case(case: Case, decider: Decider) -> Outcome:
    try:
        doc = decider.decide(case.facts, case.as_of, case.form)
    except MiaopiError as exc:
        return Outcome(case, decider.backend, error=f"{type(exc).__name__}: {exc}")
    return Outcome(case, decider.backend, tuple(compare(case, doc)))


@dataclass
class Deciders:
    """Each policy built once per backend; a backend that cannot be built is an error."""

    by_backend: dict[str, dict[str, Decider]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # backend -> why

    @classmethod
    def build(cls, policies: Mapping[str, Policy], backends: Iterable[str]) -> Deciders:
        out = cls()
        for backend in backends:
            try:
                out.by_backend[backend] = {
                    item: BACKENDS[backend](policy) for item, policy in policies.items()
                }
            except ImportError as exc:
                out.broken[backend] = f"cannot load the {backend} backend: {exc}"
        return out


def run_cases(cases: Iterable[Case], deciders: Deciders) -> list[Outcome]:
    """Every case on every working backend, cases in order, backends in order per case."""
    out: list[Outcome] = []
    for case in cases:
        for by_item in deciders.by_backend.values():
            out.append(run_case(case, by_item[case.item]))
    return out
