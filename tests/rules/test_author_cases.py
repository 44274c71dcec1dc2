"""The policy authors' cases (rules/cases/*.yaml) as pytest tests: one per (case, backend).

Same reading and comparison as ``miaopi rules test``; a failure says which
field differs with the expected and the actual value. Ids are
``<item>-line<N>-<backend>`` (the case's line in its file; its Chinese name is in
the failure message). A case file that does not load is one failing test. A
backend that cannot be built fails its tests: durable included, never skipped.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

from approval_service.authoring.cases import Case
from approval_service.authoring.run import run_case
from approval_service.authoring.suite import Suite, load_suite
from approval_service.engine.backends import BACKENDS, Decider
from approval_service.errors import MiaopiError

RULES = Path(__file__).resolve().parents[2] / "rules"


def _suite() -> Suite | str:
    try:
        return load_suite(RULES)
    except MiaopiError as exc:
        return str(exc)


SUITE = _suite()


def _params() -> list[Any]:
    if isinstance(SUITE, str):
        return [pytest.param(None, None, SUITE, id="rules-folder")]
    params = [
        pytest.param(None, None, str(problem), id=f"case-file-{index}")
        for index, problem in enumerate(SUITE.problems)
    ]
    for case in SUITE.cases:
        for backend in BACKENDS:
            case_id = f"{case.item}-line{case.line}-{backend}"
            params.append(pytest.param(case, backend, None, id=case_id))
    return params


@cache
def _decider(backend: str, item: str) -> Decider:
    assert not isinstance(SUITE, str)
    return BACKENDS[backend](SUITE.policies[item])


@pytest.mark.parametrize(("case", "backend", "problem"), _params())
def test_author_case(case: Case | None, backend: str | None, problem: str | None) -> None:
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    assert case is not None and backend is not None
    try:
        decider = _decider(backend, case.item)
    except ImportError as exc:
        pytest.fail(f"the {backend} backend cannot be loaded: {exc}", pytrace=False)
    outcome = run_case(case, decider)
    if not outcome.passed:
        pytest.fail(outcome.describe(), pytrace=False)
