"""The request mix: every item, plausible applicants, invalid IDs, not-found IDs and repeats."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from approval_service.errors import InvalidIdNumber
from approval_service.loadtest.mix import (
    INVALID,
    ITEMS,
    NORMAL,
    NOT_FOUND,
    REPEAT,
    Plan,
    Pools,
    build_plan,
    load_pools,
)
from data_lookups.id_numbers import validate_id_number
from data_lookups.synthetic import generate_registry

TODAY = date(2026, 11, 23)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("registry")
    generate_registry(folder, 4000, seed=3, as_of=TODAY)
    return folder


@pytest.fixture(scope="module")
def pools(registry: Path) -> Pools:
    return load_pools(registry, today=TODAY, seed=1)


def make_plan(pools: Pools, count: int = 3000, **kwargs: object) -> Plan:
    return build_plan(
        pools,
        count,
        host="127.0.0.1:8000",
        key="secret",
        run_id="abc",
        seed=5,
        today=TODAY,
        **kwargs,  # type: ignore[arg-type]
    )


def parse(request: bytes) -> tuple[str, dict[str, str], dict[str, object]]:
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body)
    return lines[0], headers, json.loads(body)


def ids_in(registry: Path, name: str) -> set[str]:
    lines = (registry / name).read_text(encoding="utf-8").splitlines()
    return {json.loads(line)["id_number"] for line in lines}


def test_pools_are_plausible(registry: Path, pools: Pools) -> None:
    sizes = pools.sizes()
    assert all(sizes.values()), sizes
    assert set(pools.fund_holders) <= ids_in(registry, "fund_accounts.jsonl")
    assert set(pools.card_holders) <= ids_in(registry, "senior_cards.jsonl")
    assert set(pools.allowance_holders) <= ids_in(registry, "allowances.jsonl")
    assert all(int(p[6:10]) <= TODAY.year - 80 for p in pools.elderly)


def test_all_seven_items_and_well_formed_requests(registry: Path, pools: Pools) -> None:
    plan = make_plan(pools)
    assert len(plan) == 3000
    items = Counter(ITEMS[i] for i, k in zip(plan.items, plan.kinds, strict=True) if k == NORMAL)
    assert set(items) == set(ITEMS)
    population = ids_in(registry, "population.jsonl")
    for request, kind in zip(plan.requests, plan.kinds, strict=True):
        line, headers, body = parse(request)
        assert line == "POST /v1/applications HTTP/1.1"
        assert headers["X-API-Key"] == "secret"
        assert headers["Host"] == "127.0.0.1:8000"
        assert body["item"] in ITEMS
        if body["item"] == "senior-card-new":
            assert body["form"]["mailing_address"]  # type: ignore[index]
        applicant = str(body["applicant_id"])
        if kind == NORMAL:
            assert applicant in population
        elif kind == NOT_FOUND:
            assert validate_id_number(applicant, today=TODAY) == applicant
            assert applicant not in population


def test_fund_items_go_to_fund_account_holders(registry: Path, pools: Pools) -> None:
    plan = make_plan(pools)
    holders = ids_in(registry, "fund_accounts.jsonl")
    fund = [
        parse(r)[2]["applicant_id"]
        for r, k in zip(plan.requests, plan.kinds, strict=True)
        if k == NORMAL and parse(r)[2]["item"] == "housing-fund-retirement-withdrawal"
    ]
    assert fund and all(a in holders for a in fund)


def test_invalid_ids_fail_validation_and_expect_422(pools: Pools) -> None:
    plan = make_plan(pools)
    invalid = [i for i, k in enumerate(plan.kinds) if k == INVALID]
    assert 10 <= len(invalid) <= 80  # about 1 %
    for i in invalid:
        assert plan.expect_422[i] == 1
        with pytest.raises(InvalidIdNumber):
            validate_id_number(str(parse(plan.requests[i])[2]["applicant_id"]), today=TODAY)
    assert sum(plan.expect_422) == len(invalid) + sum(
        plan.expect_422[i] for i, k in enumerate(plan.kinds) if k == REPEAT
    )


def test_repeats_share_an_idempotency_key(pools: Pools) -> None:
    plan = make_plan(pools)
    keys = [parse(r)[1]["Idempotency-Key"] for r in plan.requests]
    repeats = [i for i, k in enumerate(plan.kinds) if k == REPEAT]
    assert 20 <= len(repeats) <= 120  # about 2 %
    first_seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        first_seen.setdefault(key, i)
    for i in repeats:
        assert first_seen[keys[i]] < i  # an earlier request with the same key ...
        assert plan.requests[first_seen[keys[i]]] == plan.requests[i]  # ... and the same body
    originals = [k for i, k in enumerate(keys) if plan.kinds[i] != REPEAT]
    assert len(set(originals)) == len(originals)  # every other request has its own key


def test_a_precheck_warm_up_touches_the_same_applicants(pools: Pools) -> None:
    applying = make_plan(pools, 500)
    prechecking = make_plan(pools, 500, precheck_share=1.0)
    assert all(parse(r)[0] == "POST /v1/precheck HTTP/1.1" for r in prechecking.requests)
    assert all("Idempotency-Key" not in parse(r)[1] for r in prechecking.requests)
    assert [parse(r)[2] for r in applying.requests] == [parse(r)[2] for r in prechecking.requests]


def test_without_a_registry_applicants_are_made_up_but_valid() -> None:
    plan = make_plan(Pools(), 200)
    for request, kind in zip(plan.requests, plan.kinds, strict=True):
        if kind in (NORMAL, NOT_FOUND):
            validate_id_number(str(parse(request)[2]["applicant_id"]), today=TODAY)
