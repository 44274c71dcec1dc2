"""The durable_rules backend: translation into Rete, sessions, versions, threads."""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from durable import engine

from approval_service.engine import durable
from approval_service.engine.backends import BACKENDS
from approval_service.engine.compiled import CompiledPolicy
from approval_service.engine.durable import DURABLE_LOCK, DurablePolicy, ruleset_name
from approval_service.engine.interpreter import InterpretedPolicy
from approval_service.engine.rete_facts import Fallback, encode
from approval_service.policy.loader import load_policy_text
from approval_service.policy.model import Policy

POLICY = """\
item: rete-test
name: 测试
department: 测试
version: "{version}"
basis: 测试
parameters:
  min_age:
    label: 最低年龄
    type: int
    values:
      2020-01-01: {min_age}
  min_balance:
    label: 最低余额
    type: money
    values:
      2020-01-01: "0.01"
facts:
  person:
    optional: true
    fields: {{birth_date: date, status: text, hukou_region: text, last_seen_date: "date?"}}
  fund:
    optional: true
    fields: {{status: text, balance: money, months: int, loan: bool, last: "date?"}}
  cards:
    list: true
    fields: {{status: text, expires_on: date, lost: bool}}
define:
  age: age_on(person.birth_date, today)
conditions:
  - code: PERSON_NOT_FOUND
    require: person is present
    on_fail: refer
    message: m
    basis: b
  - code: DECEASED
    require: person.status != "deceased"
    on_fail: reject
    message: m
    basis: b
  - code: NOT_LOCAL
    require: starts_with(person.hukou_region, city_prefix)
    on_fail: reject
    message: m
    basis: b
  - code: TOO_YOUNG
    require: age >= min_age
    on_fail: reject
    message: m
    basis: b
  - code: BAD_STATUS
    require: fund.status in ["normal", "sealed"] and not fund.loan
    on_fail: reject
    message: m
    basis: b
  - code: SHORT
    require: fund.months >= 3
    on_fail: reject
    message: m
    basis: b
  - code: RECENT
    require: fund.last is absent or today >= add_months(fund.last, 3)
    on_fail: reject
    message: m
    basis: b
  - code: POOR
    require: fund.balance >= min_balance
    on_fail: reject
    message: m
    basis: b
  - code: HAS_CARD
    require: none(c in cards where c.status == "valid" and c.expires_on >= today)
    on_fail: refer
    message: m
    basis: b
  - code: REVOKED
    require: none(c in cards where c.status in ["revoked", "forged"] and not c.lost)
    on_fail: reject
    message: m
    basis: b
  - code: EXPIRING
    require: count(c in cards where add_days(c.expires_on, -30) <= today) < 3
    on_fail: refer
    message: m
    basis: b
result:
  band: if age >= 90 then "90+" else "young"
"""

TODAY = date(2026, 11, 23)
CARD = {"status": "valid", "expires_on": date(2027, 1, 1), "lost": False}


def make(version: str = "1", min_age: int = 80) -> Policy:
    return load_policy_text(POLICY.format(version=version, min_age=min_age), "rete-test.yaml")


def facts(**changes: Any) -> dict[str, Any]:
    person = {
        "birth_date": date(1940, 1, 1),
        "status": "alive",
        "hukou_region": "341602",
        "last_seen_date": None,
    }
    fund = {
        "status": "normal",
        "balance": Decimal("10.00"),
        "months": 5,
        "loan": False,
        "last": None,
    }
    out: dict[str, Any] = {"person": person, "fund": fund, "cards": []}
    for key, value in changes.items():
        record, _, field = key.partition("__")
        if field:
            out[record] = {**out[record], field: value}
        else:
            out[record] = value
    return out


@pytest.fixture(scope="module")
def backend() -> DurablePolicy:
    return DurablePolicy(make())


def rule(backend: DurablePolicy, code: str) -> dict[str, Any]:
    return next(r for r in backend.describe() if r["code"] == code)


def rete_part(described: dict[str, Any]) -> list[Any]:
    """The tests of ``e == 1 & (fallback failed | (no fallback & <these>))``."""
    tests: list[Any] = described["match"]["$and"][1]["$or"][1]["$and"]
    return tests


def test_registered_as_the_durable_backend() -> None:
    decider = BACKENDS["durable"](make())
    assert decider.backend == "durable"
    assert isinstance(decider, DurablePolicy)


def test_pure_rete_conditions_are_matched_in_the_rule_not_precomputed(
    backend: DurablePolicy,
) -> None:
    deceased = rule(backend, "DECEASED")
    assert deceased["precomputed"] == []
    assert deceased["match"] == {
        "$and": [
            {"e": 1},
            {
                "$or": [
                    {"fb1": True},
                    {
                        "$and": [
                            {"$nex": {"fb1": 1}},
                            {"$ex": {"has_person": 1}},
                            {"f_person__status": "deceased"},
                        ]
                    },
                ]
            },
        ]
    }
    short = rule(backend, "SHORT")
    assert short["precomputed"] == []
    assert {"$lt": {"f_fund__months": 30000}} in rete_part(short)
    poor = rule(backend, "POOR")  # two attributes of one fact compared in Rete
    assert poor["precomputed"] == []
    assert {"$lt": {"f_fund__balance": {"$m": "p_min_balance"}}} in rete_part(poor)


def test_de_morgan_and_in_lists_stay_in_rete(backend: DurablePolicy) -> None:
    bad = rule(backend, "BAD_STATUS")
    assert bad["precomputed"] == []
    text = str(bad["match"])
    # not (status in [normal, sealed] and not loan) = status != normal and != sealed, or loan
    assert "{'$neq': {'f_fund__status': 'normal'}}" in text
    assert "{'$neq': {'f_fund__status': 'sealed'}}" in text
    assert "{'f_fund__loan': True}" in text


def test_constant_prefix_is_a_regex_match_in_rete(backend: DurablePolicy) -> None:
    local = rule(backend, "NOT_LOCAL")
    assert local["precomputed"] == []
    assert "'$mt': {'f_person__hukou_region': '341[^6].*'}" in str(local["match"])
    for region, fails in [
        ("341602", False),
        ("3416", False),
        ("341", True),
        ("", True),
        ("340100", True),
        ("x3416", True),
        ("3416中文", False),
        ("中文", True),
    ]:
        doc = backend.decide(facts(person__hukou_region=region), TODAY)
        assert ("NOT_LOCAL" in [r["code"] for r in doc["reasons"]]) is fails, region


def test_what_rete_cannot_express_is_precomputed_and_listed(backend: DurablePolicy) -> None:
    assert rule(backend, "TOO_YOUNG")["precomputed"] == ["age"]
    assert rule(backend, "RECENT")["precomputed"] == ["add_months(fund.last, 3)"]
    assert rule(backend, "EXPIRING")["precomputed"] == [
        "count(c in cards where add_days(c.expires_on, -30) <= today)"
    ]
    attrs = rule(backend, "RECENT")["attributes"]
    assert attrs["x6_0"] == "precomputed: add_months(fund.last, 3)"
    assert attrs["today"] == "today: today"


def test_item_fields_are_compared_with_fact_values_in_rete(backend: DurablePolicy) -> None:
    has_card = rule(backend, "HAS_CARD")
    assert has_card["precomputed"] == []
    assert set(has_card["attributes"]) == {"l_cards", "today"}
    assert rete_part(has_card)[-1] == {
        "$iany": {
            "l_cards": {
                "$and": [{"$i.status": "valid"}, {"$gte": {"$i.expires_on": {"$m": "today"}}}]
            }
        }
    }


def test_list_aggregates_over_the_item_alone_run_in_rete(backend: DurablePolicy) -> None:
    revoked = rule(backend, "REVOKED")
    assert revoked["precomputed"] == []
    assert revoked["attributes"] == {"l_cards": "fact: cards"}
    over_items = rete_part(revoked)[-1]
    assert over_items == {
        "$iany": {
            "l_cards": {
                "$and": [
                    {"$or": [{"$i.status": "revoked"}, {"$i.status": "forged"}]},
                    {"$i.lost": False},
                ]
            }
        }
    }
    for cards, fails in [
        ([], False),
        ([CARD], False),
        ([CARD, {**CARD, "status": "forged"}], True),
        ([{**CARD, "status": "revoked", "lost": True}], False),
    ]:
        doc = backend.decide(facts(cards=cards), TODAY)
        assert ("REVOKED" in [r["code"] for r in doc["reasons"]]) is fails, cards


def test_absent_input_of_a_precomputed_term_is_left_out_not_a_fallback() -> None:
    backend = DurablePolicy(make())
    doc = backend.decide(facts(fund__last=None), TODAY)
    assert doc["decision"] == "approved"
    assert backend.fallbacks == 0
    doc = backend.decide(facts(fund__last=date(2026, 9, 1)), TODAY)
    assert [r["code"] for r in doc["reasons"]] == ["RECENT"]
    doc = backend.decide(facts(fund__last=date(2026, 8, 23)), TODAY)
    assert doc["decision"] == "approved"


def test_one_fact_fires_every_failing_rule_in_declared_order() -> None:
    backend = DurablePolicy(make())
    bundle = facts(
        person__status="deceased",
        person__hukou_region="110101",
        person__birth_date=date(1990, 1, 1),
        fund__months=2,
        fund__balance=Decimal("0.00"),
        cards=[{"status": "valid", "expires_on": TODAY, "lost": False}],
    )
    doc = backend.decide(bundle, TODAY)
    assert doc["decision"] == "rejected"
    assert [r["code"] for r in doc["reasons"]] == [
        "DECEASED",
        "NOT_LOCAL",
        "TOO_YOUNG",
        "SHORT",
        "POOR",
    ]


def test_skipped_conditions_are_not_asserted_and_traced_as_skipped() -> None:
    backend = DurablePolicy(make())
    fact, skipped = backend.fact(_env(backend, facts(fund=None)))
    codes = [backend.policy.conditions[i].code for i in sorted(skipped)]
    assert codes == ["BAD_STATUS", "SHORT", "RECENT", "POOR"]
    assert not any(name.startswith("f_fund") for name in fact)
    doc = backend.decide(facts(fund=None), TODAY, trace=True)
    assert doc["decision"] == "approved"
    entry = next(e for e in doc["trace"] if e["code"] == "SHORT")
    assert entry["outcome"] == "skipped"
    assert entry["absent"] == ["fund"]
    nobody = backend.decide(facts(person=None, fund=None), TODAY)
    assert [r["code"] for r in nobody["reasons"]] == ["PERSON_NOT_FOUND"]


def _env(backend: DurablePolicy, bundle: dict[str, Any]) -> dict[str, Any]:
    from approval_service.engine.interpreter import build_env

    return build_env(backend.policy, bundle, TODAY, None)


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"fund__balance": Decimal("0.01")},
        {"fund__balance": Decimal("0.00")},
        {"person__birth_date": date(1946, 11, 23)},
        {"person__birth_date": date(1946, 11, 24)},
        {"person__birth_date": date(1936, 11, 23)},
        {"fund__status": "frozen"},
        {"fund__loan": True},
        {"fund": None},
        {"person": None},
        {"cards": [{"status": "valid", "expires_on": TODAY, "lost": False}]},
        {"cards": [{"status": "valid", "expires_on": date(2026, 11, 22), "lost": False}]},
        {"cards": [{"status": "revoked", "expires_on": TODAY, "lost": False}]},
        {"cards": [{"status": "forged", "expires_on": TODAY, "lost": True}]},
        {"cards": [CARD, {"status": "forged", "expires_on": TODAY, "lost": False}]},
        {"cards": [{**CARD, "status": "x", "expires_on": date(2026, 12, 23)}] * 3},
        {"cards": [{**CARD, "status": "x", "expires_on": date(2026, 12, 24)}] * 3},
    ],
)
def test_same_documents_as_the_other_backends(change: dict[str, Any]) -> None:
    policy = make()
    bundle = facts(**change)
    for trace in (False, True):
        expected = InterpretedPolicy(policy).decide(bundle, TODAY, trace=trace)
        assert CompiledPolicy(policy).decide(bundle, TODAY, trace=trace) == expected
        assert _shared(policy).decide(bundle, TODAY, trace=trace) == expected


_DECIDERS: dict[str, DurablePolicy] = {}


def _shared(policy: Policy) -> DurablePolicy:
    return _DECIDERS.setdefault(policy.sha256, DurablePolicy(policy))


def test_money_is_matched_as_exact_scaled_integers() -> None:
    assert encode(Decimal("0.01"), "num") == 100
    assert encode(Decimal("99999999.99"), "num") == 999_999_999_900
    assert encode(3, "num") == 30_000
    assert encode(date(2025, 1, 1), "date") == date(2025, 1, 1).toordinal()
    for inexact in (Decimal("0.00001"), Decimal("1E13")):
        with pytest.raises(Fallback):
            encode(inexact, "num")


def test_values_rete_cannot_match_exactly_fall_back_to_the_interpreter() -> None:
    backend = DurablePolicy(make())
    for balance, decision in [
        (Decimal("0.00001"), "rejected"),  # below 0.01, more than 4 decimals
        (Decimal("1E13"), "approved"),  # beyond a double's exact integers once scaled
    ]:
        before = backend.fallbacks
        assert backend.decide(facts(fund__balance=balance), TODAY)["decision"] == decision
        assert backend.fallbacks == before + 1
    assert backend.decide(facts(fund__balance=Decimal("0.005")), TODAY)["decision"] == "rejected"


def test_realistic_values_never_fall_back() -> None:
    backend = DurablePolicy(make())
    for cents in (0, 1, 2, 99, 12345, 9_999_999_999):
        for months in (0, 2, 3, 4, 400):
            backend.decide(facts(fund__balance=Decimal(cents) / 100, fund__months=months), TODAY)
    assert backend.fallbacks == 0


def test_each_decision_uses_a_fresh_session_that_is_deleted() -> None:
    backend = DurablePolicy(make())
    sids = set()
    for _ in range(3):
        backend.decide(facts(), TODAY)
        sids.add(backend.last_sid)
        assert backend._collectors == {}
    assert len(sids) == 3
    for sid in sids:
        with pytest.raises(Exception, match="state"):
            backend.host.get_state(backend.name, sid)


def test_state_is_deleted_even_when_the_engine_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = DurablePolicy(make())
    real = backend.host.assert_fact

    def assert_then_fail(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)  # the session exists now
        raise RuntimeError("engine failure")

    monkeypatch.setattr(backend.host, "assert_fact", assert_then_fail)
    with pytest.raises(RuntimeError, match="engine failure"):
        backend.decide(facts(), TODAY)
    assert backend._collectors == {}
    with pytest.raises(Exception, match="state"):
        backend.host.get_state(backend.name, backend.last_sid)


def test_one_ruleset_per_policy_version_and_versions_coexist() -> None:
    old, new = make("1", min_age=80), make("2", min_age=60)
    assert ruleset_name(old) != ruleset_name(new)
    assert ruleset_name(old).startswith("rete-test@1#")
    old_backend, new_backend = DurablePolicy(old), DurablePolicy(new)
    assert old_backend.host is not new_backend.host
    sixty_five = facts(person__birth_date=date(1961, 1, 1))
    assert old_backend.decide(sixty_five, TODAY)["decision"] == "rejected"
    assert new_backend.decide(sixty_five, TODAY)["decision"] == "approved"
    again = DurablePolicy(old)  # the same version twice: separate hosts, no clash
    assert again.decide(sixty_five, TODAY)["decision"] == "rejected"


def test_close_frees_the_ruleset() -> None:
    backend = DurablePolicy(make())
    assert backend.decide(facts(), TODAY)["decision"] == "approved"
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        backend.decide(facts(), TODAY)


def test_catch_all_keeps_a_passing_fact_from_raising(backend: DurablePolicy) -> None:
    definition = backend.definition()
    assert definition["catch_all"] == {"all": [{"m": {"e": 1}}]}
    assert backend.decide(facts(), TODAY)["decision"] == "approved"


def test_calls_are_serialized_by_one_lock() -> None:
    backend = DurablePolicy(make())
    done: list[str] = []

    def run() -> None:
        done.append(backend.decide(facts(), TODAY)["decision"])

    with DURABLE_LOCK:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(0.3)
        assert worker.is_alive() and done == []  # waits for the lock
    worker.join(5)
    assert done == ["approved"]


def test_decisions_from_many_threads_are_all_correct() -> None:
    backend = DurablePolicy(make())
    cases = [
        (facts(), "approved"),
        (facts(fund__months=1), "rejected"),
        (facts(cards=[{"status": "valid", "expires_on": TODAY, "lost": False}]), "referred"),
    ]
    errors: list[str] = []

    def run(offset: int) -> None:
        for n in range(150):
            bundle, expected = cases[(n + offset) % 3]
            got = backend.decide(bundle, TODAY)["decision"]
            if got != expected:
                errors.append(f"{got} != {expected}")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert backend._collectors == {}


def test_no_background_threads_poll_the_engine() -> None:
    before = threading.active_count()
    DurablePolicy(make())
    assert threading.active_count() == before
    assert durable._Host._run is not engine.Host._run
