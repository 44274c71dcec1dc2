"""The declaration sections of a policy file: parameters, facts and the form.

Each reads one section, checks it strictly (every error with file, line and a
suggestion) and adds what it declares to the expression scope.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from approval_service.errors import (
    Location,
    PolicyDefinitionError,
    PolicySyntaxError,
    PolicyTypeError,
)
from approval_service.policy.model import Expr, FactDecl, FormField, Parameter
from approval_service.policy.parser import ExprSyntaxError, parse_expression
from approval_service.policy.typecheck import Checker, ExprTypeError, Symbol, did_you_mean
from approval_service.policy.types import TEXT, Type, list_of, parse_scalar, record
from approval_service.policy.yamlsource import Mark, YMap

PARAMETER_KEYS = {"label": True, "type": True, "values": True}
FACT_KEYS = {"optional": False, "list": False, "fields": True}
FORM_KEYS = {"label": True, "min_length": False, "max_length": False, "required": False}


class PolicyFile:
    """Helpers bound to one policy file, so every error carries its location."""

    def __init__(self, path: str) -> None:
        self.path = path

    def at(self, mark: Mark | None) -> Location:
        return Location(self.path, mark.line, mark.column) if mark else Location(self.path)

    def mapping(self, value: Any, what: str, mark: Mark | None, keys: dict[str, bool]) -> YMap:
        if not isinstance(value, YMap):
            raise PolicyDefinitionError(
                f"{what} must be a mapping (key: value lines)", self.at(mark)
            )
        for key in value:
            if key not in keys:
                raise PolicyDefinitionError(
                    f"unknown key `{key}` in {what}",
                    self.at(value.key_marks[key]),
                    did_you_mean(str(key), list(keys)) or f"allowed: {', '.join(keys)}",
                )
        for key, required in keys.items():
            if required and key not in value:
                raise PolicyDefinitionError(f"{what} is missing `{key}`", self.at(value.mark))
        return value

    def text(self, table: YMap, key: str, what: str) -> str:
        value = table[key]
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value).strip() == "":
            raise PolicyDefinitionError(
                f"`{key}` of {what} must be non-empty text", self.at(table.value_marks[key])
            )
        return str(value)

    def expr(self, source: Any, mark: Mark, checker: Checker, what: str) -> Expr:
        if not isinstance(source, str | int | bool):
            raise PolicyDefinitionError(
                f"{what} must be an expression written as text", self.at(mark)
            )
        text = str(source).lower() if isinstance(source, bool) else str(source)
        try:
            node = parse_expression(text)
        except ExprSyntaxError as exc:
            raise PolicySyntaxError(
                f"{what}: {exc.message}", self._offset(mark, text, exc.offset), exc.suggestion
            ) from None
        try:
            checked = checker.check(node, text)
        except ExprTypeError as exc:
            raise PolicyTypeError(
                f"{what}: {exc.message}", self._offset(mark, text, exc.node.start), exc.suggestion
            ) from None
        line = mark.line + (1 if mark.style in ("|", ">") else 0)
        return Expr(text, node, line, frozenset(checked.reads))

    def _offset(self, mark: Mark, text: str, offset: int) -> Location:
        if mark.style in ("|", ">"):
            before = text[:offset]
            return Location(
                self.path, mark.line + 1 + before.count("\n"), len(before.rsplit("\n", 1)[-1]) + 1
            )
        quote = 1 if mark.style in ('"', "'") else 0
        return Location(self.path, mark.line, mark.column + quote + offset)


def fresh_name(f: PolicyFile, name: str, scope: dict[str, Symbol], mark: Mark) -> None:
    if not name.isidentifier() or not name.isascii():
        raise PolicyDefinitionError(
            f"`{name}` is not a usable name", f.at(mark), "use letters, digits and _ like min_age"
        )
    if name in scope:
        raise PolicyDefinitionError(
            f"`{name}` is already defined (as a {scope[name].kind})",
            f.at(mark),
            "pick another name",
        )


def parameters(f: PolicyFile, top: YMap, scope: dict[str, Symbol]) -> dict[str, Parameter]:
    out: dict[str, Parameter] = {}
    table = top.get("parameters") or YMap()
    if "parameters" in top:
        f.mapping(
            table, "parameters", top.value_marks["parameters"], {str(k): False for k in table}
        )
    for name, spec in table.items():
        name = str(name)
        fresh_name(f, name, scope, table.key_marks[name])
        spec = f.mapping(spec, f"parameter `{name}`", table.value_marks[name], PARAMETER_KEYS)
        try:
            typ = parse_scalar(str(spec["type"]))
        except ValueError as exc:
            raise PolicyDefinitionError(str(exc), f.at(spec.value_marks["type"])) from None
        if typ.nullable or typ.kind == "bool":
            raise PolicyDefinitionError(
                "a parameter is an int, money, text or date", f.at(spec.value_marks["type"])
            )
        values = spec["values"]
        if not isinstance(values, YMap) or not values:
            raise PolicyDefinitionError(
                f"`values` of parameter `{name}` must map effective dates to values",
                f.at(spec.value_marks["values"]),
                "e.g. 2025-01-01: 60",
            )
        rows = []
        for day, value in values.items():
            if not isinstance(day, date):
                raise PolicyDefinitionError(
                    f"`{day}` is not a date",
                    f.at(values.key_marks[day]),
                    "write effective dates as YYYY-MM-DD",
                )
            rows.append((day, parameter_value(f, typ, value, values.value_marks[day])))
        rows.sort()
        out[name] = Parameter(
            name, typ, str(spec["label"]), tuple(d for d, _ in rows), tuple(v for _, v in rows)
        )
        scope[name] = Symbol(typ, "param")
    return out


def parameter_value(f: PolicyFile, typ: Type, value: Any, mark: Mark) -> Any:
    if typ.kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if typ.kind == "money" and isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            pass
    if typ.kind == "text" and isinstance(value, str):
        return value
    if typ.kind == "date" and isinstance(value, date):
        return value
    raise PolicyDefinitionError(
        f"`{value}` is not a {typ}", f.at(mark), 'money as "60.00", dates as YYYY-MM-DD'
    )


def facts(f: PolicyFile, top: YMap, scope: dict[str, Symbol]) -> dict[str, FactDecl]:
    out: dict[str, FactDecl] = {}
    table = f.mapping(
        top["facts"], "facts", top.value_marks["facts"], {str(k): False for k in top["facts"] or {}}
    )
    for name, spec in table.items():
        name = str(name)
        mark = table.value_marks[name]
        fresh_name(f, name, scope, table.key_marks[name])
        if isinstance(spec, str):
            try:
                typ = parse_scalar(spec)
            except ValueError as exc:
                raise PolicyDefinitionError(str(exc), f.at(mark)) from None
            out[name] = FactDecl(name, spec, typ)
            scope[name] = Symbol(typ, "fact")
            continue
        spec = f.mapping(spec, f"fact `{name}`", mark, FACT_KEYS)
        optional, is_list = bool(spec.get("optional")), bool(spec.get("list"))
        if optional and is_list:
            raise PolicyDefinitionError(
                f"fact `{name}` is a list; a list is never absent, only empty", f.at(mark)
            )
        fields_spec = f.mapping(
            spec["fields"],
            f"fields of `{name}`",
            spec.value_marks["fields"],
            {str(k): False for k in spec["fields"] or {}},
        )
        fields = {}
        for field_name, field_type in fields_spec.items():
            try:
                fields[str(field_name)] = parse_scalar(str(field_type))
            except ValueError as exc:
                raise PolicyDefinitionError(
                    str(exc), f.at(fields_spec.value_marks[field_name])
                ) from None
        rec = record(name, fields, nullable=optional)
        typ = list_of(record(name, fields)) if is_list else rec
        out[name] = FactDecl(
            name, "list" if is_list else ("record?" if optional else "record"), typ
        )
        scope[name] = Symbol(typ, "fact", optional_record=optional)
    return out


def form(f: PolicyFile, top: YMap, scope: dict[str, Symbol]) -> dict[str, FormField]:
    out: dict[str, FormField] = {}
    if "form" not in top:
        return out
    table = f.mapping(
        top["form"], "form", top.value_marks["form"], {str(k): False for k in top["form"] or {}}
    )
    fields = {}
    for name, spec in table.items():
        spec = f.mapping(spec, f"form field `{name}`", table.value_marks[name], FORM_KEYS)
        low, high = spec.get("min_length", 1), spec.get("max_length", 200)
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
            raise PolicyDefinitionError(
                f"lengths of form field `{name}` must be 0 <= min_length <= max_length",
                f.at(spec.mark),
            )
        out[str(name)] = FormField(
            str(name), str(spec["label"]), low, high, bool(spec.get("required", True))
        )
        fields[str(name)] = TEXT if spec.get("required", True) else TEXT.maybe()
    scope["form"] = Symbol(record("form", fields), "form")
    return out
