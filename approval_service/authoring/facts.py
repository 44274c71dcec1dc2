"""What a fact looks like to a case file: the policy's declaration over the registry catalogue.

A case may give any field the registry provides (:data:`data_lookups.catalogue.FACTS`),
so cases can be copied from registry rows; the fields the policy declares are the
ones the engine reads, and those must be given unless they may be null.
"""

from __future__ import annotations

from dataclasses import dataclass

from approval_service.policy.model import Policy
from approval_service.policy.types import Type, parse_scalar
from data_lookups.catalogue import FACTS


@dataclass(frozen=True)
class FactSpec:
    name: str
    shape: str  # "record", "record?", "list" or "scalar"
    fields: dict[str, Type]  # of the record, or of each list item
    required: frozenset[str]  # fields the policy reads that cannot be null
    scalar: Type | None = None


def known_facts(policy: Policy) -> list[str]:
    """Fact names a case of ``policy`` may give, the policy's first."""
    return [*policy.facts, *(name for name in FACTS if name not in policy.facts)]


def catalogue_type(shape: str) -> Type | None:
    """The scalar type of a catalogue shape like ``date?``; None for records and lists."""
    if shape in ("record", "record?", "list"):
        return None
    return parse_scalar(shape)


def fact_spec(policy: Policy, name: str) -> FactSpec:
    """How to read fact ``name`` for ``policy``; ``name`` must be in :func:`known_facts`."""
    shape, field_types = FACTS.get(name, ("", {}))
    fields = {key: parse_scalar(spec) for key, spec in field_types.items()}
    decl = policy.facts.get(name)
    if decl is None:
        scalar = catalogue_type(shape)
        if scalar is not None:
            return FactSpec(name, "scalar", {}, frozenset(), scalar)
        return FactSpec(name, shape, fields, frozenset())
    if decl.shape not in ("record", "record?", "list"):
        return FactSpec(name, "scalar", {}, frozenset(), decl.type)
    record = decl.type.item if decl.shape == "list" else decl.type
    assert record is not None
    declared = dict(record.fields)
    fields.update(declared)
    required = frozenset(key for key, typ in declared.items() if not typ.nullable)
    return FactSpec(name, decl.shape, fields, required)
