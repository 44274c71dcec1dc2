"""``miaopi rules lint``: what the loader cannot know about a rules folder.

The loader checks each policy on its own. Lint adds the checks that need the
rest of the world, every finding with file:line and a fix:

- every declared fact and field is provided by the registries
  (:data:`data_lookups.catalogue.FACTS`) with the same shape and type;
- every policy has a case file, and every case file loads;
- every reason code is expected as failing by at least one case;
- every parameter has a value in force on the earliest ``as_of`` of its cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from approval_service.authoring.cases import CaseFile, CaseFileProblem
from approval_service.authoring.facts import catalogue_type
from approval_service.authoring.suite import CASES_FOLDER, load_cases
from approval_service.errors import Location, PolicyError, PolicyFolderError
from approval_service.policy.loader import load_policy_folder
from approval_service.policy.model import FactDecl, Policy
from approval_service.policy.typecheck import did_you_mean
from approval_service.policy.yamlsource import Mark, YList, YMap, load_yaml
from data_lookups.catalogue import FACTS


@dataclass(frozen=True)
class Finding:
    location: Location
    message: str
    suggestion: str | None = None

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}"
        return text + (f" ({self.suggestion})" if self.suggestion else "")


@dataclass
class LintReport:
    policies: int = 0
    cases: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def lint_folder(
    rules_dir: Path, deployment: dict[str, str] | None = None, cases: Path | None = None
) -> LintReport:
    report = LintReport()
    try:
        policies = load_policy_folder(rules_dir, deployment)
    except PolicyFolderError as exc:
        report.findings += [
            Finding(e.location or Location(""), e.message, e.suggestion) for e in exc.errors
        ]
        return report
    except PolicyError as exc:
        report.findings.append(Finding(exc.location or Location(""), exc.message, exc.suggestion))
        return report
    report.policies = len(policies)
    files, problems = load_cases(policies, cases or rules_dir / CASES_FOLDER)
    report.cases = sum(len(f.cases) for f in files)
    for problem in problems:
        if isinstance(problem, CaseFileProblem):
            report.findings.append(Finding(problem.location, problem.message, problem.suggestion))
        else:
            report.findings.append(Finding(Location(""), str(problem)))
    broken = {str(p.location.file) for p in problems if isinstance(p, CaseFileProblem)}
    for item, policy in sorted(policies.items()):
        marks = PolicyMarks(policy)
        report.findings += check_catalogue(policy, marks)
        mine = [f for f in files if f.item == item]
        if not mine:
            if not any(Path(b).stem == item for b in broken):
                report.findings.append(
                    Finding(
                        Location(policy.source_file, 1, 1),
                        f"`{item}` has no test cases",
                        f"write {rules_dir / CASES_FOLDER / (item + '.yaml')}",
                    )
                )
            continue
        report.findings += check_reasons(policy, mine, marks)
        report.findings += check_parameters(policy, mine, marks)
    return report


class PolicyMarks:
    """Where things stand in a policy file, read again for line numbers."""

    def __init__(self, policy: Policy) -> None:
        self.file = policy.source_file
        try:
            doc: Any = load_yaml(Path(self.file).read_text(encoding="utf-8"), self.file)
        except (OSError, PolicyError):
            doc = None
        self.doc = doc if isinstance(doc, YMap) else None

    def at(self, *path: str | int) -> Location:
        """The location of the key at ``path`` (``"facts", "person", "fields", "x"``)."""
        node: Any = self.doc
        mark: Mark | None = None
        for step in path:
            if isinstance(node, YMap) and step in node:
                mark = node.key_marks[step]
                node = node[step]
            elif isinstance(node, YList) and isinstance(step, int) and step < len(node):
                mark = node.marks[step]
                node = node[step]
            else:
                break
        return Location(self.file, mark.line, mark.column) if mark else Location(self.file)


def check_catalogue(policy: Policy, marks: PolicyMarks | None = None) -> list[Finding]:
    """Every declared fact and field as the registries provide it."""
    marks = marks or PolicyMarks(policy)
    out: list[Finding] = []
    for name, decl in policy.facts.items():
        where = marks.at("facts", name)
        if name not in FACTS:
            out.append(
                Finding(
                    where,
                    f"fact `{name}` is not provided by the registries",
                    did_you_mean(name, list(FACTS)) or f"facts: {', '.join(FACTS)}",
                )
            )
            continue
        shape, fields = FACTS[name]
        if decl.shape != shape:
            out.append(Finding(where, *_shape_problem(decl, shape)))
            continue
        if catalogue_type(shape) is not None:
            continue
        record = decl.type.item if decl.shape == "list" else decl.type
        assert record is not None
        for key, typ in record.fields:
            at = marks.at("facts", name, "fields", key)
            if key not in fields:
                out.append(
                    Finding(
                        at,
                        f"the registries have no field `{name}.{key}`",
                        did_you_mean(key, list(fields)) or f"fields: {', '.join(fields)}",
                    )
                )
            elif str(typ) != fields[key]:
                out.append(
                    Finding(
                        at,
                        f"`{name}.{key}` is declared {typ}, the registries provide {fields[key]}",
                        f"declare it {fields[key]}",
                    )
                )
    return out


def _shape_problem(decl: FactDecl, shape: str) -> tuple[str, str]:
    what = {"record?": "a record that may be absent", "record": "a record", "list": "a list"}
    said = what.get(decl.shape, decl.shape)
    provided = what.get(shape, shape)
    if shape == "record?":
        fix = "declare it with optional: true"
    elif shape == "list":
        fix = "declare it with list: true"
    else:
        fix = f"declare it as `{decl.name}: {shape}`"
    return f"fact `{decl.name}` is declared as {said}, the registries provide {provided}", fix


def check_reasons(policy: Policy, files: list[CaseFile], marks: PolicyMarks) -> list[Finding]:
    """Every reason code is expected by at least one failing case."""
    expected = {code for f in files for case in f.cases for code in (case.expect.reasons or ())}
    out: list[Finding] = []
    for index, condition in enumerate(policy.conditions):
        if condition.code not in expected:
            out.append(
                Finding(
                    marks.at("conditions", index, "code"),
                    f"reason code `{condition.code}` is not expected by any case",
                    f"add a case to {files[0].path} with reasons: [{condition.code}]",
                )
            )
    return out


def check_parameters(policy: Policy, files: list[CaseFile], marks: PolicyMarks) -> list[Finding]:
    """No parameter lacks a value on the earliest date the cases decide on."""
    cases = [case for f in files for case in f.cases]
    if not cases:
        return []
    earliest = min(cases, key=lambda c: c.as_of)
    out: list[Finding] = []
    for name, parameter in policy.parameters.items():
        first = parameter.effective[0]
        if first > earliest.as_of:
            out.append(
                Finding(
                    marks.at("parameters", name),
                    f"parameter `{name}` has no value before {first.isoformat()}, but case "
                    f"`{earliest.name}` ({earliest.where}) is as of {earliest.as_of.isoformat()}",
                    f"add a value in force on {earliest.as_of.isoformat()} or move the case",
                )
            )
    return out
