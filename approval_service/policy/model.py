"""A loaded, checked policy: what the backends compile."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from approval_service.errors import ParameterMissingError
from approval_service.policy import ast
from approval_service.policy.types import Type

OUTCOMES = ("reject", "refer")


@dataclass(frozen=True)
class Parameter:
    name: str
    type: Type
    label: str
    effective: tuple[date, ...]  # ascending
    values: tuple[Any, ...]

    def value_on(self, day: date) -> Any:
        index = bisect.bisect_right(self.effective, day) - 1
        if index < 0:
            raise ParameterMissingError(
                f"parameter `{self.name}` has no value in force on {day.isoformat()} "
                f"(its first value is from {self.effective[0].isoformat()})"
            )
        return self.values[index]


@dataclass(frozen=True)
class FactDecl:
    name: str
    shape: str  # "record?", "list" or a scalar type like "date?"
    type: Type  # record / list of record / scalar


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    min_length: int
    max_length: int
    required: bool


@dataclass
class Expr:
    """One expression of a policy file, parsed and checked."""

    source: str
    node: ast.Node
    line: int
    reads: frozenset[str] = frozenset()  # optional records read (absent → skipped)

    @property
    def type(self) -> Type:
        assert self.node.type is not None
        return self.node.type


@dataclass
class Define:
    name: str
    expr: Expr


@dataclass
class Condition:
    code: str
    require: Expr  # what must hold for approval
    on_fail: str  # reject | refer
    message: str
    basis: str

    @property
    def reason(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "basis": self.basis}


@dataclass
class ResultField:
    name: str
    expr: Expr


@dataclass
class Policy:
    item: str
    name: str
    department: str
    version: str
    basis: str
    description: str
    source_file: str
    sha256: str
    referral_working_days: int
    issue: str | None
    parameters: dict[str, Parameter]
    facts: dict[str, FactDecl]
    form: dict[str, FormField]
    defines: list[Define]
    conditions: list[Condition]
    result: list[ResultField]
    deployment: dict[str, str] = field(default_factory=dict)
    source_text: str = field(default="", repr=False)  # the file as loaded, kept for replay

    @property
    def fact_names(self) -> frozenset[str]:
        return frozenset(self.facts)

    def parameters_on(self, day: date) -> dict[str, Any]:
        return {name: p.value_on(day) for name, p in self.parameters.items()}
