"""Fact gathering from the registry database: catalogue shapes and types, one snapshot."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from registry_rows import couple_rows, new_id, person, write_jsonl
from sqlalchemy import Engine, text

from approval_service.errors import FactsError
from data_lookups.catalogue import FACTS
from data_lookups.database import write_transaction
from data_lookups.facts import ALL_FACTS, SqlFactSource, Stamp
from data_lookups.importer import import_directory
from data_lookups.issuance import issue_card

TODAY = date(2026, 11, 23)
PY_TYPES = {"text": str, "int": int, "money": Decimal, "date": date, "bool": bool}


def _load_couple(engine: Engine, directory: Path) -> tuple[str, str]:
    me, spouse = new_id(date(1944, 2, 29)), new_id(region="320102")
    write_jsonl(directory, "population.jsonl", [person(me), person(spouse, gender="M")])
    for name, rows in couple_rows(me, spouse).items():
        write_jsonl(directory, f"{name}.jsonl", rows)
    assert import_directory(engine, directory, today=TODAY).ok
    return me, spouse


def _check_types(facts: dict[str, object]) -> None:
    for name, value in facts.items():
        shape, fields = FACTS[name]
        records: list[object]
        if shape == "list":
            assert isinstance(value, list)
            records = value
        elif shape == "record?":
            records = [] if value is None else [value]
        else:
            assert value is None or isinstance(value, PY_TYPES[shape.rstrip("?")])
            continue
        for record in records:
            assert isinstance(record, dict) and set(record) == set(fields), name
            for field, kind in fields.items():
                item = record[field]
                if item is None:
                    assert kind.endswith("?"), (name, field)
                else:
                    assert type(item) is PY_TYPES[kind.rstrip("?")], (name, field, item)


def test_every_fact_with_catalogue_types(engine: Engine, tmp_path: Path) -> None:
    me, spouse = _load_couple(engine, tmp_path)
    facts = SqlFactSource(engine).gather(me, ALL_FACTS)
    assert set(facts) == ALL_FACTS
    _check_types(facts)
    assert facts["person"] == {
        "id_number": me,
        "name": "张秀英",
        "gender": "F",
        "birth_date": date(1944, 2, 29),
        "hukou_region": "341602",
        "status": "alive",
        "death_date": None,
        "last_seen_date": date(2026, 10, 1),
    }
    assert facts["low_income"] == [{"category": "tekun", "since": date(2019, 5, 1)}]
    assert facts["allowances"] == [
        {"status": "stopped", "start_date": date(2021, 1, 1), "monthly_amount": Decimal("50.00")}
    ]
    assert [c["card_no"] for c in facts["cards"]] == [f"C{me}1", f"C{me}2"]  # type: ignore[attr-defined]
    assert facts["photo"] is None
    assert facts["fund"] == {
        "account_no": f"G{me}",
        "status": "normal",
        "balance": Decimal("1234.50"),
        "continuous_months": 7,
        "has_outstanding_loan": False,
        "last_rent_withdrawal_date": None,
        "retirement_category": "female55",
    }
    assert facts["properties"] == []
    assert facts["spouse_properties"] == [
        {"property_id": f"P{spouse}1", "region": "320102"},
        {"property_id": f"P{spouse}2", "region": "341602"},
    ]
    assert facts["retired_on"] == date(1999, 3, 1)
    assert SqlFactSource(engine).gather(spouse, frozenset({"spouse_properties"})) == {
        "spouse_properties": []
    }


def test_unknown_person_has_absent_records_and_empty_lists(engine: Engine) -> None:
    facts = SqlFactSource(engine).gather(new_id(), ALL_FACTS)
    _check_types(facts)
    assert facts["person"] is None and facts["fund"] is None and facts["retired_on"] is None
    assert facts["cards"] == [] and facts["spouse_properties"] == []


def test_only_the_names_asked_for(engine: Engine, tmp_path: Path) -> None:
    me, _ = _load_couple(engine, tmp_path)
    facts = SqlFactSource(engine).gather(me, frozenset({"person", "retired_on"}))
    assert set(facts) == {"person", "retired_on"}
    with pytest.raises(FactsError, match="unknown facts"):
        SqlFactSource(engine).gather(me, frozenset({"persons"}))


def test_stamp_moves_with_imports_and_issuance(engine: Engine, tmp_path: Path) -> None:
    me, _ = _load_couple(engine, tmp_path)
    source = SqlFactSource(engine)
    first = source.stamp(me)
    stamp, _facts = source.gather_stamped(me, frozenset({"cards"}))
    assert stamp == first
    with write_transaction(engine) as conn:
        conn.execute(
            text(
                "UPDATE senior_cards SET status = 'cancelled', "
                "cancel_reason = 'lost', cancelled_on = '2026-11-01' "
                "WHERE card_no = :c"
            ),
            {"c": f"C{me}2"},
        )
        issue_card(conn, me, "B", TODAY, date(2031, 11, 23), "app-1")
    second = source.stamp(me)
    assert second == Stamp(first.epoch, first.version + 1)
    write_jsonl(tmp_path / "again", "photos.jsonl", [{"id_number": me, "photo_sha256": "1" * 64}])
    assert import_directory(engine, tmp_path / "again", today=TODAY).ok
    assert source.stamp(me) == Stamp(first.epoch + 1, second.version)


def test_gather_in_sees_the_transactions_own_writes(engine: Engine, tmp_path: Path) -> None:
    me, _ = _load_couple(engine, tmp_path)
    source = SqlFactSource(engine)
    with write_transaction(engine) as conn:
        conn.execute(
            text(
                "UPDATE senior_cards SET status = 'cancelled', cancel_reason = 'lost', "
                "cancelled_on = '2026-11-01' WHERE card_no = :c"
            ),
            {"c": f"C{me}2"},
        )
        card_no = issue_card(conn, me, "B", TODAY, date(2031, 11, 23), "app-1")
        inside = source.gather_in(conn, me, frozenset({"cards", "person"}))
        cards = [c["card_no"] for c in inside["cards"]]  # type: ignore[attr-defined]
        assert cards == [f"C{me}1", f"C{me}2", card_no]
        assert set(inside) == {"cards", "person"}
        _check_types(inside)
        conn.rollback()
    assert len(source.gather(me, frozenset({"cards"}))["cards"]) == 2  # type: ignore[arg-type]
