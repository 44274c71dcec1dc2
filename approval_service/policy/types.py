"""The types of the policy language.

Scalars: ``bool``, ``int``, ``money`` (``Decimal``), ``text`` (``str``), ``date``
(``datetime.date``); a trailing ``?`` marks a value that may be absent
(``None``). Records have named fields; lists hold records or scalars.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

SCALARS = ("bool", "int", "money", "text", "date")


@dataclass(frozen=True)
class Type:
    kind: str  # one of SCALARS, "record", "list", "null"
    nullable: bool = False
    fields: tuple[tuple[str, Type], ...] = ()
    item: Type | None = None
    name: str = field(default="", compare=False)

    def field_type(self, name: str) -> Type | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None

    def field_names(self) -> list[str]:
        return [key for key, _ in self.fields]

    def non_null(self) -> Type:
        return replace(self, nullable=False) if self.nullable else self

    def maybe(self) -> Type:
        return replace(self, nullable=True)

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("int", "money")

    def __str__(self) -> str:
        if self.kind == "record":
            text = f"record {self.name}" if self.name else "record"
        elif self.kind == "list":
            text = f"list of {self.item}"
        else:
            text = self.kind
        return text + ("?" if self.nullable else "")


BOOL = Type("bool")
INT = Type("int")
MONEY = Type("money")
TEXT = Type("text")
DATE = Type("date")
NULL = Type("null", nullable=True)


def parse_scalar(spec: str) -> Type:
    """``"date?"`` -> nullable date. Raises ValueError naming the allowed types."""
    nullable = spec.endswith("?")
    base = spec[:-1] if nullable else spec
    if base not in SCALARS:
        raise ValueError(
            f"unknown type {spec!r}; use one of {', '.join(SCALARS)} "
            "(add ? if absent values are allowed)"
        )
    return Type(base, nullable=nullable)


def record(name: str, fields: dict[str, Type], nullable: bool = False) -> Type:
    return Type("record", nullable=nullable, fields=tuple(fields.items()), name=name)


def list_of(item: Type) -> Type:
    return Type("list", item=item)


def numeric_join(a: Type, b: Type) -> Type | None:
    """The type of mixing two numbers: int with int is int, anything with money is money."""
    if not (a.is_numeric and b.is_numeric):
        return None
    return INT if a.kind == b.kind == "int" else MONEY
