"""The engine backends by name, and a loaded set of compiled policies."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from approval_service.errors import UnknownItem
from approval_service.policy.loader import load_policy_folder
from approval_service.policy.model import Policy


class Decider(Protocol):
    """One policy on one backend."""

    backend: str
    policy: Policy

    def decide(
        self,
        facts: Mapping[str, Any],
        today: date,
        form: Mapping[str, Any] | None = None,
        trace: bool = False,
    ) -> dict[str, Any]: ...


def _compiled(policy: Policy) -> Decider:
    from approval_service.engine.compiled import CompiledPolicy

    return CompiledPolicy(policy)


def _interpreted(policy: Policy) -> Decider:
    from approval_service.engine.interpreter import InterpretedPolicy

    return InterpretedPolicy(policy)


def _durable(policy: Policy) -> Decider:
    from approval_service.engine.durable import DurablePolicy

    decider: Decider = DurablePolicy(policy)
    return decider


BACKENDS: dict[str, Callable[[Policy], Decider]] = {
    "compiled": _compiled,
    "interpreted": _interpreted,
    "durable": _durable,
}


@dataclass
class PolicySet:
    """Every policy of a folder, each compiled once for one backend."""

    policies: dict[str, Policy]
    deciders: dict[str, Decider]
    backend: str

    @classmethod
    def load(
        cls, folder: Path, deployment: dict[str, str] | None = None, backend: str = "compiled"
    ) -> PolicySet:
        policies = load_policy_folder(folder, deployment)
        return cls.of(policies, backend)

    @classmethod
    def of(cls, policies: dict[str, Policy], backend: str = "compiled") -> PolicySet:
        make = BACKENDS[backend]
        return cls(policies, {item: make(p) for item, p in policies.items()}, backend)

    def decider(self, item: str) -> Decider:
        try:
            return self.deciders[item]
        except KeyError:
            from approval_service.policy.typecheck import did_you_mean

            hint = did_you_mean(item, sorted(self.deciders))
            raise UnknownItem(
                f"unknown item {item!r}"
                + (f"; {hint}" if hint else f"; items: {', '.join(sorted(self.deciders))}"),
                field="item",
            ) from None
