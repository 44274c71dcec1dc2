"""A rules folder with its case files, loaded once for the CLI, pytest and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from approval_service.authoring.cases import (
    Case,
    CaseFile,
    CaseFileProblem,
    case_paths,
    load_case_file,
)
from approval_service.errors import CaseFileError
from approval_service.policy.loader import load_policy_folder
from approval_service.policy.model import Policy
from approval_service.settings import Settings

CASES_FOLDER = "cases"


def deployment_of(settings: Settings) -> dict[str, str]:
    """The deployment values a policy may read (``city_prefix``, ``province_prefix``)."""
    return {"city_prefix": settings.city_prefix, "province_prefix": settings.province_prefix}


@dataclass
class Suite:
    policies: dict[str, Policy]
    files: list[CaseFile] = field(default_factory=list)
    problems: list[CaseFileError] = field(default_factory=list)  # files that did not load

    @property
    def cases(self) -> list[Case]:
        return [case for f in self.files for case in f.cases]

    def cases_of(self, item: str) -> list[Case]:
        return [case for f in self.files if f.item == item for case in f.cases]


def load_cases(
    policies: dict[str, Policy], path: Path
) -> tuple[list[CaseFile], list[CaseFileError]]:
    """Every case file at ``path`` (file or folder); one that does not load is a problem."""
    files: list[CaseFile] = []
    problems: list[CaseFileError] = []
    try:
        paths = case_paths(path)
    except CaseFileProblem as exc:
        return files, [exc]
    for one in paths:
        try:
            files.append(load_case_file(one, policies))
        except CaseFileError as exc:
            problems.append(exc)
    return files, problems


def load_suite(
    rules_dir: Path, cases: Path | None = None, deployment: dict[str, str] | None = None
) -> Suite:
    """Policies of ``rules_dir`` (all or nothing: raises PolicyFolderError) and case files.

    ``cases`` is a case file or folder, by default ``rules_dir/cases``. A case file
    that does not load is kept in ``problems`` so the others still run.
    """
    policies = load_policy_folder(rules_dir, deployment)
    files, problems = load_cases(policies, cases or rules_dir / CASES_FOLDER)
    return Suite(policies, files, problems)
