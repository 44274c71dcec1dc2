"""Validating what a caller sends, against the item's policy; errors name the field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from approval_service.errors import RequestError
from approval_service.policy.model import Policy
from data_lookups.id_numbers import validate_id_number


@dataclass(frozen=True)
class Application:
    """A validated request: the item, the normalised ID number and the form."""

    item: str
    applicant_id: str
    form: dict[str, str | None]


def validate_application(
    policy: Policy, applicant_id: str, form: Mapping[str, Any] | None
) -> Application:
    try:
        normalised = validate_id_number(applicant_id)
    except RequestError as exc:
        exc.field = "applicant_id"
        raise
    given = dict(form or {})
    clean: dict[str, str | None] = {}
    for name in given:
        if name not in policy.form:
            allowed = ", ".join(policy.form) or "none"
            raise RequestError(
                f"form.{name} is not a field of {policy.item} (its form fields: {allowed})",
                field=f"form.{name}",
            )
    for name, spec in policy.form.items():
        value = given.get(name)
        if value is None:
            if spec.required:
                raise RequestError(
                    f"form.{name} ({spec.label}) is required for {policy.item}",
                    field=f"form.{name}",
                )
            clean[name] = None
            continue
        if not isinstance(value, str):
            raise RequestError(f"form.{name} must be text", field=f"form.{name}")
        text = value.strip()
        if not spec.min_length <= len(text) <= spec.max_length:
            raise RequestError(
                f"form.{name} ({spec.label}) must be {spec.min_length} to {spec.max_length} "
                f"characters, got {len(text)}",
                field=f"form.{name}",
            )
        clean[name] = text
    return Application(policy.item, normalised, clean)
