"""The durable_rules backend: each policy's conditions matched by a Rete network.

At construction a policy becomes one durable_rules ruleset (named after the
item, its version and the file's sha256, so two versions coexist) in a
``durable.engine.Host`` of its own: one rule per condition that matches the
condition's *failure* (see :mod:`approval_service.engine.rete` for what runs
in Rete and what the interpreter precomputes), plus a catch-all.

Per decision:

1. the interpreter's ``build_env`` reads the facts, parameters and defines;
2. one fact is built with the attributes of every evaluated condition's rule
   (conditions whose optional record is absent are skipped: their attributes
   are not asserted, their rule needs the record's presence flag, and they are
   not listed);
3. the fact is asserted into a fresh session (``sid``); every failing
   condition's rule fires and its action records the condition in the
   session's collector (a fact that matches several rules fires each: facts,
   unlike events, are not consumed by the first rule);
4. the session is deleted and the decision assembled by the interpreter's
   ``assemble`` (reasons in declared order, reject beats refer; results on
   approval by ``compute_result``).

A condition one of whose values cannot be matched exactly in Rete (money with
more than 4 decimals, numbers beyond 2**53, text durable's regex cannot read,
a precomputed term that fails) is decided for that evaluation by the
interpreter's ``condition_holds``; its verdict is asserted as the attribute
``fb<i>`` that the condition's rule matches instead, and ``fallbacks`` counts
these.

The catch-all rule matches every fact and does nothing: durable_rules raises
for a fact that no rule matches. (A catch-all whose second pattern never
matches would save that action call, but it crashes durable_rules 2.0.28 in
``delete_state``.)

Threads: durable_rules keeps its sessions in one C engine and is not safe to
call from two threads at once. Every call into it is made under one
process-wide lock (``DURABLE_LOCK``), so ``decide`` may be called from any
thread but runs one evaluation at a time. The host's own background pollers
(two timer threads that dispatch queued actions and timers every 0.2 s) are
not started: actions run synchronously inside ``assert_fact`` on the calling
thread, and a second thread touching the engine is what the lock prevents.

Every rule also tests ``e == 1``, the mark of the evaluation fact: durable
matches rules against the session's state too, and a rule made only of
absence tests (``-m.has_person``) would match the state and re-fire forever.
Each ``DurablePolicy`` holds one C ruleset until ``close()``.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from durable import engine
from durable.lang import m

from approval_service.engine.interpreter import (
    assemble,
    build_env,
    condition_holds,
    trace_entry,
)
from approval_service.engine.rete import translate
from approval_service.engine.rete_facts import FactBuilder, RuleSpec
from approval_service.policy.model import Condition, Policy

DURABLE_LOCK = threading.Lock()


def _ignore(c: Any) -> None:
    return None


class _Host(engine.Host):  # type: ignore[misc]
    """A durable_rules host without the background dispatch threads."""

    def _run(self) -> None:
        return None


def ruleset_name(policy: Policy) -> str:
    """Item, version and file hash: two versions of a policy never share a ruleset."""
    return f"{policy.item}@{policy.version}#{policy.sha256[:12]}"


class DurablePolicy:
    """The durable_rules (Rete) backend for one policy version."""

    backend = "durable"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.name = ruleset_name(policy)
        self.rules: list[RuleSpec] = [
            translate(policy, condition, index) for index, condition in enumerate(policy.conditions)
        ]
        self._builder = FactBuilder(self.rules)
        self.fallbacks = 0  # conditions decided by the interpreter (see module doc)
        self.last_sid = ""
        self.closed = False
        self._collectors: dict[str, list[int]] = {}
        self._sids = itertools.count(1)
        with DURABLE_LOCK:
            self.host = _Host({self.name: self.definition(with_actions=True)})

    def definition(self, with_actions: bool = False) -> dict[str, Any]:
        """The ruleset as durable_rules JSON (a fresh dict: durable consumes it)."""
        rules: dict[str, Any] = {spec.name: spec.definition for spec in self.rules}
        # Catch-all: a fact that no rule matches raises in durable_rules.
        rules["catch_all"] = {"all": [{"m": (m.e == 1).define()}]}
        if with_actions:
            for spec in self.rules:
                rules[spec.name]["run"] = self._collector_for(spec.index)
            rules["catch_all"]["run"] = _ignore
        return rules

    def _collector_for(self, index: int) -> Callable[[Any], None]:
        def collect(c: Any) -> None:  # durable calls actions with one argument
            self._collectors[c.s.sid].append(index)

        return collect

    def describe(self) -> list[dict[str, Any]]:
        """Per condition: its Rete rule, the attributes it reads, what is precomputed."""
        return [
            {
                "code": spec.condition.code,
                "rule": spec.name,
                "match": spec.definition["all"][0]["m"],
                "attributes": {a.name: f"{a.origin}: {a.source}" for a in spec.attrs},
                "precomputed": spec.precomputed,
            }
            for spec in self.rules
        ]

    def fact(self, env: Mapping[str, Any]) -> tuple[dict[str, Any], set[int]]:
        """The evaluation's fact (without sid) and the skipped condition indexes."""
        fact: dict[str, Any] = {"e": 1}
        cache: dict[str, Any] = {}
        skipped: set[int] = set()
        for spec in self.rules:
            if any(env[r] is None for r in spec.condition.require.reads):
                skipped.add(spec.index)  # not evaluated: its rule needs the record
            elif not self._builder.add(fact, cache, spec, env):
                self.fallbacks += 1
                fact[spec.fallback] = not condition_holds(spec.condition, env)
        return fact, skipped

    def failed_indexes(self, env: Mapping[str, Any]) -> tuple[set[int], set[int]]:
        """(failed, skipped) condition indexes for one evaluation, matched in Rete."""
        fact, skipped = self.fact(env)
        with DURABLE_LOCK:
            if self.closed:
                raise RuntimeError(f"{self.name} is closed")
            sid = f"{next(self._sids)}"
            self.last_sid = sid
            fact["sid"] = sid
            collector: list[int] = []
            self._collectors[sid] = collector
            try:
                self.host.assert_fact(self.name, fact)
            except BaseException:
                with contextlib.suppress(Exception):  # may not exist; keep the first error
                    self.host.delete_state(self.name, sid)
                raise
            else:
                self.host.delete_state(self.name, sid)
            finally:
                del self._collectors[sid]
        return set(collector), skipped

    def close(self) -> None:
        """Free the ruleset in durable's C engine (it holds at most 131071 per process).

        Not done on garbage collection: a finalizer could run on a thread that
        already holds ``DURABLE_LOCK``. Call it when a reload replaces the policy.
        """
        with DURABLE_LOCK:
            if not self.closed:
                ruleset = self.host.get_ruleset(self.name)
                engine.durable_rules_engine.delete_ruleset(ruleset._handle)
                self.closed = True

    def decide(
        self,
        facts: Mapping[str, Any],
        today: date,
        form: Mapping[str, Any] | None = None,
        trace: bool = False,
    ) -> dict[str, Any]:
        env = build_env(self.policy, facts, today, form)
        failed_at, skipped = self.failed_indexes(env)
        conditions = self.policy.conditions
        failed: list[Condition] = [c for i, c in enumerate(conditions) if i in failed_at]
        doc = assemble(self.policy, failed, env)
        if trace:
            doc["trace"] = [
                trace_entry(
                    c,
                    "skipped" if i in skipped else ("failed" if i in failed_at else "passed"),
                    env,
                )
                for i, c in enumerate(conditions)
            ]
        return doc
