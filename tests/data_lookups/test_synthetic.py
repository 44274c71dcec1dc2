"""The synthetic registry: deterministic, valid, realistic enough, and importable."""

from __future__ import annotations

import filecmp
from collections import Counter
from datetime import date
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine

from data_lookups.id_numbers import is_valid_id_number
from data_lookups.importer import import_directory
from data_lookups.synthetic import FILES, generate_registry

AS_OF = date(2026, 11, 23)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("synthetic")
    generate_registry(directory, 20_000, seed=7, as_of=AS_OF)
    return directory


def _rows(directory: Path, name: str) -> list[dict[str, object]]:
    with (directory / f"{name}.jsonl").open("rb") as handle:
        return [orjson.loads(line) for line in handle]


def test_same_seed_and_date_same_bytes(registry: Path, tmp_path: Path) -> None:
    generate_registry(tmp_path / "again", 20_000, seed=7, as_of=AS_OF)
    for name in FILES:
        assert filecmp.cmp(
            registry / f"{name}.jsonl", tmp_path / "again" / f"{name}.jsonl", shallow=False
        ), name
    generate_registry(tmp_path / "other", 100, seed=8, as_of=AS_OF)
    first = (tmp_path / "other" / "population.jsonl").read_text().splitlines()[0]
    assert first != (registry / "population.jsonl").read_text().splitlines()[0]


def test_people_look_like_bozhou(registry: Path) -> None:
    people = _rows(registry, "population")
    assert len(people) == 20_000
    ids = [str(p["id_number"]) for p in people]
    assert len(set(ids)) == len(ids)
    assert all(is_valid_id_number(i, today=AS_OF) for i in ids)
    assert all(
        (int(i[16]) % 2 == 1) == (p["gender"] == "M") for i, p in zip(ids, people, strict=True)
    )
    ages = [AS_OF.year - int(str(p["birth_date"])[:4]) for p in people]

    def share(n: int) -> float:
        return sum(a >= n for a in ages) / len(ages)

    assert 0.17 < share(60) < 0.24 and 0.02 < share(80) < 0.045
    assert share(100) > 0
    assert any(str(p["birth_date"]).endswith("-02-29") for p in people)
    statuses = Counter(p["status"] for p in people)
    assert 0 < statuses["deceased"] < 0.05 * len(people)
    assert all((p["death_date"] is None) == (p["status"] == "alive") for p in people)
    hukou = Counter(str(p["hukou_region"])[:4] for p in people)
    assert hukou["3416"] > 0.85 * len(people)
    assert any(k.startswith("34") and k != "3416" for k in hukou)
    assert any(not k.startswith("34") for k in hukou)
    moved_in = [
        p
        for p in people
        if str(p["id_number"])[:4] != "3416" and str(p["hukou_region"]).startswith("3416")
    ]
    assert moved_in
    assert any(p["last_seen_date"] is None for p in people)


def test_other_registries_cover_the_cases(registry: Path) -> None:
    cards = _rows(registry, "senior_cards")
    assert {(c["status"], c["cancel_reason"]) for c in cards} == {
        ("valid", None),
        ("cancelled", "lost"),
        ("cancelled", "renewed"),
    }
    assert any(str(c["expires_on"]) < AS_OF.isoformat() for c in cards if c["status"] == "valid")
    lost = Counter(c["id_number"] for c in cards if c["cancel_reason"] == "lost")
    assert any(n >= 2 for n in lost.values())
    funds = _rows(registry, "fund_accounts")
    assert {f["status"] for f in funds} == {"normal", "sealed", "frozen", "closed"}
    people = {p["id_number"]: p for p in _rows(registry, "population")}
    for fund in funds:
        male = people[fund["id_number"]]["gender"] == "M"
        assert (fund["retirement_category"] == "male60") == male
    photo_ids = {p["id_number"] for p in _rows(registry, "photos")}
    adults = [
        i
        for i, p in people.items()
        if p["status"] == "alive" and AS_OF.year - int(str(p["birth_date"])[:4]) >= 17
    ]
    missing = sum(i not in photo_ids for i in adults) / len(adults)
    assert 0.01 < missing < 0.06
    marriages = {(m["id_number"], m["spouse_id_number"]) for m in _rows(registry, "marriages")}
    assert marriages and all((b, a) in marriages for a, b in marriages)
    for a, b in marriages:
        years = [int(str(people[x]["birth_date"])[:4]) for x in (a, b)]
        assert abs(years[0] - years[1]) < 20
        assert people[a]["gender"] != people[b]["gender"]
    allowances = _rows(registry, "allowances")
    assert {a["status"] for a in allowances} == {"active", "stopped"}
    regions = Counter(str(p["region"])[:4] for p in _rows(registry, "properties"))
    assert regions["3416"] > 0 and sum(regions.values()) > regions["3416"]
    assert _rows(registry, "social_security") and _rows(registry, "low_income")


def test_generated_registry_imports_cleanly(engine: Engine, tmp_path: Path) -> None:
    generate_registry(tmp_path, 3_000, seed=1, as_of=AS_OF)
    report = import_directory(engine, tmp_path, today=AS_OF)
    assert report.ok, report.problems()[:5]
