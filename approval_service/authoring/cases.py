"""Policy authors' test cases: ``rules/cases/<item>.yaml``, read strictly.

The format is documented for authors in ``rules/cases/README.md``. A file holds
one item's cases; ``defaults`` are merged into every case (record facts field
by field, lists and scalar facts replaced whole). Facts are registry-shaped
records as :data:`data_lookups.catalogue.FACTS` defines them, converted to the
declared types. Every problem raises :class:`CaseFileProblem` with the file,
line and a fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, NoReturn

from approval_service.authoring.facts import FactSpec, fact_spec, known_facts
from approval_service.authoring.values import BadValue, bad_timestamp_at, convert, parse_date
from approval_service.errors import CaseFileError, Location, PolicyError
from approval_service.policy.model import Policy
from approval_service.policy.typecheck import did_you_mean
from approval_service.policy.yamlsource import Mark, YList, YMap, load_yaml

DECISIONS = ("approved", "rejected", "referred")
TOP_KEYS = ("item", "defaults", "cases")
DEFAULT_KEYS = ("as_of", "facts", "form")
CASE_KEYS = ("name", "as_of", "facts", "form", "expect")
EXPECT_KEYS = ("decision", "reasons", "result")


class CaseFileProblem(CaseFileError):
    """A malformed case file: where, what, and how to fix it."""

    def __init__(self, message: str, location: Location, suggestion: str | None = None) -> None:
        self.message = message
        self.location = location
        self.suggestion = suggestion
        text = f"{location}: {message}"
        super().__init__(text + (f" ({suggestion})" if suggestion else ""))


@dataclass(frozen=True)
class Expectation:
    decision: str
    reasons: tuple[str, ...] | None  # None: not checked
    result: dict[str, Any]  # a subset of the result fields, converted


@dataclass(frozen=True)
class Case:
    item: str
    name: str
    file: str
    line: int
    as_of: date
    facts: dict[str, Any]
    form: dict[str, Any] | None
    expect: Expectation

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class CaseFile:
    path: str
    item: str
    cases: list[Case] = field(default_factory=list)


def case_paths(path: Path) -> list[Path]:
    """The case files at ``path``: the file itself, or every ``*.yaml`` in the folder."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(path.glob("*.yaml"))
    raise CaseFileProblem("no such case file or folder", Location(str(path)))


def load_case_file(path: Path, policies: Mapping[str, Policy]) -> CaseFile:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseFileProblem(f"cannot read: {exc}", Location(str(path))) from exc
    return load_case_text(text, str(path), policies)


def load_case_text(text: str, path: str, policies: Mapping[str, Policy]) -> CaseFile:
    """Read one case file against the loaded policies; raises :class:`CaseFileProblem`."""
    try:
        doc = load_yaml(text, path)
    except PolicyError as exc:
        location = exc.location or Location(path)
        raise CaseFileProblem(exc.message, location, exc.suggestion) from None
    except ValueError as exc:  # PyYAML builds dates like 1941-02-30 and fails
        raise CaseFileProblem(
            f"not a real calendar date ({exc})", bad_timestamp_at(text, path), "check the day"
        ) from None
    return _Reader(path, policies).read(doc)


class _Reader:
    def __init__(self, path: str, policies: Mapping[str, Policy]) -> None:
        self.path = path
        self.policies = policies

    def fail(self, mark: Mark | None, message: str, fix: str | None = None) -> NoReturn:
        where = Location(self.path, mark.line, mark.column) if mark else Location(self.path)
        raise CaseFileProblem(message, where, fix)

    def mapping(self, value: Any, what: str, mark: Mark | None, keys: tuple[str, ...]) -> YMap:
        if value is None:
            value = YMap()
            value.mark, value.key_marks, value.value_marks = mark or Mark(1, 1), {}, {}
        if not isinstance(value, YMap):
            self.fail(mark, f"{what} must be a mapping", "write key: value lines, or {key: value}")
        for key in value:
            if key not in keys:
                self.fail(
                    value.key_marks[key],
                    f"unknown key `{key}` in {what}",
                    did_you_mean(str(key), list(keys)) or f"allowed: {', '.join(keys)}",
                )
        return value

    def read(self, doc: Any) -> CaseFile:
        top = self.mapping(doc, "the case file", Mark(1, 1), TOP_KEYS)
        if "item" not in top:
            self.fail(Mark(1, 1), "the case file has no `item`", "start with item: <policy item>")
        item = str(top["item"])
        policy = self.policies.get(item)
        if policy is None:
            hint = did_you_mean(item, sorted(self.policies))
            self.fail(
                top.value_marks["item"],
                f"no policy has item `{item}`",
                hint or f"items: {', '.join(sorted(self.policies))}",
            )
        defaults = self.mapping(
            top.get("defaults"), "defaults", top.value_marks.get("defaults"), DEFAULT_KEYS
        )
        base_facts = self.facts(policy, defaults)
        base_form = self.form(policy, defaults)
        items = top.get("cases")
        if not isinstance(items, YList) or not items:
            self.fail(
                top.value_marks.get("cases", top.mark),
                "`cases` must be a non-empty list",
                "write each case as a list entry starting with `- name: ...`",
            )
        out = CaseFile(self.path, item)
        names: dict[str, int] = {}
        for raw, mark in zip(items, items.marks, strict=True):
            case = self.case(policy, raw, mark, defaults, base_facts, base_form)
            if case.name in names:
                self.fail(
                    mark,
                    f"case name `{case.name}` is also used at line {names[case.name]}",
                    "give every case its own name",
                )
            names[case.name] = case.line
            out.cases.append(case)
        return out

    def case(
        self,
        policy: Policy,
        raw: Any,
        mark: Mark,
        defaults: YMap,
        base_facts: dict[str, Any],
        base_form: dict[str, Any],
    ) -> Case:
        spec = self.mapping(raw, "a case", mark, CASE_KEYS)
        for key in ("name", "expect"):
            if key not in spec:
                self.fail(mark, f"the case has no `{key}`", f"add `{key}:` to the case")
        name = spec["name"]
        if not isinstance(name, str) or not name.strip():
            self.fail(
                spec.value_marks["name"], "`name` must be non-empty text", "like name: 85岁 → 批准"
            )
        source, key = (spec, "as_of") if "as_of" in spec else (defaults, "as_of")
        if key not in source:
            self.fail(mark, f"case `{name}` has no `as_of` date", "add as_of: YYYY-MM-DD")
        try:
            as_of = parse_date(source[key])
        except BadValue as exc:
            self.fail(source.value_marks[key], exc.message, exc.fix)
        facts = self.complete(policy, {**base_facts, **self.facts(policy, spec, base_facts)}, mark)
        form = {**base_form, **self.form(policy, spec)}
        return Case(
            item=policy.item,
            name=name.strip(),
            file=self.path,
            line=mark.line,
            as_of=as_of,
            facts=facts,
            form=form or None,
            expect=self.expect(policy, spec["expect"], spec.value_marks["expect"]),
        )

    # -- facts -------------------------------------------------------------------------

    def facts(
        self, policy: Policy, owner: YMap, base: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The facts written under ``owner['facts']``, converted; records merged onto ``base``."""
        if "facts" not in owner or owner["facts"] is None:
            return {}
        known = known_facts(policy)
        table = self.mapping(
            owner["facts"], "facts", owner.value_marks["facts"], tuple(map(str, owner["facts"]))
        )
        out: dict[str, Any] = {}
        for name, value in table.items():
            if name not in known:
                self.fail(
                    table.key_marks[name],
                    f"unknown fact `{name}`",
                    did_you_mean(str(name), known) or f"facts: {', '.join(known)}",
                )
            spec = fact_spec(policy, str(name))
            mark = table.value_marks[name]
            earlier = (base or {}).get(str(name))
            out[str(name)] = self.fact_value(spec, value, mark, earlier)
        return out

    def fact_value(self, spec: FactSpec, value: Any, mark: Mark, earlier: Any) -> Any:
        if spec.scalar is not None:
            try:
                return convert(value, spec.scalar)
            except BadValue as exc:
                self.fail(mark, f"fact `{spec.name}`: {exc.message}", exc.fix)
        if spec.shape == "list":
            if value is None:
                return []
            if not isinstance(value, YList):
                self.fail(
                    mark,
                    f"fact `{spec.name}` is a list of records",
                    "write [] for none, or one `- field: value` entry per record",
                )
            return [self.record(spec, v, m, {}) for v, m in zip(value, value.marks, strict=True)]
        if value is None:
            if spec.shape == "record":
                self.fail(
                    mark,
                    f"fact `{spec.name}` cannot be absent in this policy",
                    "give the record's fields",
                )
            return None
        return self.record(spec, value, mark, earlier or {})

    def record(self, spec: FactSpec, value: Any, mark: Mark, earlier: dict[str, Any]) -> Any:
        table = self.mapping(value, f"a `{spec.name}` record", mark, tuple(map(str, value or {})))
        out = dict(earlier)
        for key, raw in table.items():
            typ = spec.fields.get(str(key))
            if typ is None:
                self.fail(
                    table.key_marks[key],
                    f"`{spec.name}` has no field `{key}`",
                    did_you_mean(str(key), list(spec.fields))
                    or f"fields: {', '.join(spec.fields)}",
                )
            try:
                out[str(key)] = convert(raw, typ)
            except BadValue as exc:
                self.fail(table.value_marks[key], f"`{spec.name}.{key}`: {exc.message}", exc.fix)
        if spec.shape == "list":
            return self.fill(spec, out, mark)
        return out

    def fill(self, spec: FactSpec, record: dict[str, Any], mark: Mark) -> dict[str, Any]:
        """Nullable fields default to null; fields the policy reads must be given."""
        for key, typ in spec.fields.items():
            if key not in record:
                if key in spec.required:
                    self.fail(
                        mark,
                        f"`{spec.name}` record has no `{key}`, which the policy reads",
                        f"add {key}: ... to the record (or to defaults)",
                    )
                if typ.nullable:
                    record[key] = None
        return record

    def complete(self, policy: Policy, facts: dict[str, Any], mark: Mark) -> dict[str, Any]:
        """Every declared fact present: lists [], optional records and scalars null."""
        out = dict(facts)
        for name in policy.facts:
            spec = fact_spec(policy, name)
            if name not in out:
                if spec.shape == "record":
                    self.fail(mark, f"fact `{name}` is not given", f"add facts: {{{name}: ...}}")
                out[name] = [] if spec.shape == "list" else None
            elif spec.shape in ("record", "record?") and out[name] is not None:
                out[name] = self.fill(spec, dict(out[name]), mark)
        return out

    # -- form and expectations ---------------------------------------------------------

    def form(self, policy: Policy, owner: YMap) -> dict[str, Any]:
        if "form" not in owner or owner["form"] is None:
            return {}
        fields = list(policy.form)
        table = self.mapping(
            owner["form"], "form", owner.value_marks["form"], tuple(map(str, owner["form"]))
        )
        out: dict[str, Any] = {}
        for key, value in table.items():
            if key not in policy.form:
                self.fail(
                    table.key_marks[key],
                    f"`{policy.item}` has no form field `{key}`",
                    did_you_mean(str(key), fields)
                    or (f"form fields: {', '.join(fields)}" if fields else "remove `form:`"),
                )
            if value is not None and not isinstance(value, str):
                self.fail(
                    table.value_marks[key], f"form field `{key}` must be text", "put it in quotes"
                )
            out[str(key)] = value
        return out

    def expect(self, policy: Policy, raw: Any, mark: Mark) -> Expectation:
        spec = self.mapping(raw, "expect", mark, EXPECT_KEYS)
        if "decision" not in spec:
            self.fail(mark, "`expect` has no `decision`", f"one of {', '.join(DECISIONS)}")
        decision = spec["decision"]
        if decision not in DECISIONS:
            self.fail(
                spec.value_marks["decision"],
                f"decision `{decision}` is not one of {', '.join(DECISIONS)}",
                did_you_mean(str(decision), list(DECISIONS)) or "write it in English",
            )
        reasons: tuple[str, ...] | None = None
        if "reasons" in spec:
            reasons = self.reasons(policy, spec["reasons"], spec.value_marks["reasons"])
        result: dict[str, Any] = {}
        if spec.get("result") is not None:
            if decision != "approved":
                self.fail(
                    spec.value_marks["result"],
                    f"a {decision} application has no result",
                    "remove `result:` or expect decision: approved",
                )
            result = self.result(policy, spec["result"], spec.value_marks["result"])
        return Expectation(str(decision), reasons, result)

    def reasons(self, policy: Policy, raw: Any, mark: Mark) -> tuple[str, ...]:
        codes = [c.code for c in policy.conditions]
        if raw is None:
            return ()
        if not isinstance(raw, YList):
            self.fail(mark, "`reasons` must be a list of reason codes", "like [AGE_BELOW_MIN]")
        for code, code_mark in zip(raw, raw.marks, strict=True):
            if code not in codes:
                self.fail(
                    code_mark,
                    f"`{policy.item}` has no reason code `{code}`",
                    did_you_mean(str(code), codes) or f"codes: {', '.join(codes)}",
                )
        return tuple(str(code) for code in raw)

    def result(self, policy: Policy, raw: Any, mark: Mark) -> dict[str, Any]:
        types = {f.name: f.expr.type for f in policy.result}
        table = self.mapping(raw, "result", mark, tuple(types))
        out: dict[str, Any] = {}
        for key, value in table.items():
            try:
                out[str(key)] = convert(value, types[str(key)])
            except BadValue as exc:
                self.fail(table.value_marks[key], f"result `{key}`: {exc.message}", exc.fix)
        return out
