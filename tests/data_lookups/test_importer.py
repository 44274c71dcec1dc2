"""Import of registry files: upserts, all-or-nothing per file, problems with file and line."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from registry_rows import new_id, person, write_jsonl
from sqlalchemy import Engine, text

from approval_service.errors import ImportValidationError
from data_lookups.database import write_transaction
from data_lookups.importer import import_directory
from data_lookups.issuance import issue_allowance

TODAY = date(2026, 11, 23)


def _rows(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql))]


def _epoch(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT epoch FROM registry_state")).scalar_one())


def test_population_upserts_by_id_number(engine: Engine, tmp_path: Path) -> None:
    a, b = new_id(), new_id()
    write_jsonl(tmp_path, "population.jsonl", [person(a), person(b, name="李四")])
    report = import_directory(engine, tmp_path, today=TODAY)
    assert report.ok, report.problems()
    write_jsonl(
        tmp_path,
        "population.jsonl",
        [person(b, name="李四改", status="deceased", death_date="2026-01-02")],
    )
    assert import_directory(engine, tmp_path, today=TODAY).ok
    rows = _rows(engine, "SELECT id_number, name, status FROM population ORDER BY id_number")
    assert sorted(rows) == sorted([(a, "张秀英", "alive"), (b, "李四改", "deceased")])


def test_lower_case_x_is_stored_upper_case(engine: Engine, tmp_path: Path) -> None:
    write_jsonl(tmp_path, "population.jsonl", [person("11010519491231002x")])
    assert import_directory(engine, tmp_path, today=TODAY).ok
    assert _rows(engine, "SELECT id_number FROM population") == [("11010519491231002X",)]


def test_a_bad_line_keeps_the_whole_file_out_but_other_files_apply(
    engine: Engine, tmp_path: Path
) -> None:
    good, other = new_id(), new_id()
    lines = [person(new_id()) for _ in range(30)]
    lines[16] = person(good, birth_date="1950-02-30")
    write_jsonl(tmp_path, "population.jsonl", lines)
    write_jsonl(tmp_path, "photos.jsonl", [{"id_number": other, "photo_sha256": "0" * 64}])
    before = _epoch(engine)
    report = import_directory(engine, tmp_path, today=TODAY)
    assert not report.ok
    assert report.problems() == [
        "population.jsonl:17: birth_date: '1950-02-30' is not a real date (use YYYY-MM-DD)"
    ]
    assert _rows(engine, "SELECT count(*) FROM population") == [(0,)]
    assert _rows(engine, "SELECT id_number FROM photos") == [(other,)]
    assert _epoch(engine) == before + 1  # only the applied file bumped it
    with pytest.raises(ImportValidationError) as info:
        report.raise_for_problems()
    assert info.value.problems == report.problems()


def test_every_problem_is_listed(engine: Engine, tmp_path: Path) -> None:
    dup = new_id()
    write_jsonl(
        tmp_path,
        "population.jsonl",
        [
            person(dup),
            "{not json",
            person(dup),
            person(new_id(), gender="X", hukou_region="34"),
            "",
            "[]",
        ],
    )
    problems = import_directory(engine, tmp_path, today=TODAY).problems()
    assert problems[0].startswith("population.jsonl:2: not valid JSON")
    assert problems[1:] == [
        "population.jsonl:3: id_number: duplicate of line 1 (one line per id_number)",
        "population.jsonl:4: gender: 'X' is not allowed (use 'M' or 'F')",
        "population.jsonl:4: hukou_region: '34' is not a region code (6 digits, like '341602')",
        'population.jsonl:6: is not a JSON object (one object per line, like {"id_number": …})',
    ]


def test_all_nine_files_import(engine: Engine, tmp_path: Path) -> None:
    me, spouse = new_id(), new_id()
    write_jsonl(tmp_path, "population.jsonl", [person(me), person(spouse, gender="M")])
    write_jsonl(
        tmp_path,
        "low_income.jsonl",
        [{"id_number": me, "category": "dibao", "since": "2020-01-01"}],
    )
    write_jsonl(
        tmp_path,
        "allowances.jsonl",
        [
            {
                "id_number": me,
                "status": "active",
                "start_date": "2021-01-01",
                "monthly_amount": "60.00",
            }
        ],
    )
    card = {
        "card_no": "C1",
        "id_number": me,
        "card_type": "B",
        "status": "valid",
        "issued_on": "2022-01-01",
        "expires_on": "2027-01-01",
        "cancel_reason": None,
        "cancelled_on": None,
    }
    write_jsonl(tmp_path, "senior_cards.jsonl", [card])
    write_jsonl(tmp_path, "photos.jsonl", [{"id_number": me, "photo_sha256": "A" * 64}])
    write_jsonl(
        tmp_path,
        "fund_accounts.jsonl",
        [
            {
                "id_number": me,
                "account_no": "G1",
                "status": "normal",
                "balance": "99999999.99",
                "continuous_months": 5,
                "has_outstanding_loan": True,
                "last_rent_withdrawal_date": "2026-01-01",
                "retirement_category": "female55",
            }
        ],
    )
    write_jsonl(
        tmp_path,
        "properties.jsonl",
        [{"property_id": "P1", "id_number": spouse, "region": "341621"}],
    )
    write_jsonl(
        tmp_path,
        "marriages.jsonl",
        [
            {"id_number": me, "spouse_id_number": spouse},
            {"id_number": spouse, "spouse_id_number": me},
        ],
    )
    write_jsonl(tmp_path, "social_security.jsonl", [{"id_number": me, "retired_on": None}])
    report = import_directory(engine, tmp_path, today=TODAY)
    assert report.ok, report.problems()
    assert [f.rows for f in report.files] == [2, 1, 1, 1, 1, 1, 1, 2, 1]
    assert _rows(engine, "SELECT photo_sha256 FROM photos") == [("a" * 64,)]
    with engine.connect() as conn:
        balance, loan = conn.execute(
            text("SELECT balance, has_outstanding_loan FROM fund_accounts")
        ).one()
    assert Decimal(str(balance)) == Decimal("99999999.99") and bool(loan) is True
    # the same files again: nothing changes, nothing fails
    assert import_directory(engine, tmp_path, today=TODAY).ok
    assert _rows(engine, "SELECT count(*) FROM marriages") == [(2,)]


def test_two_valid_cards_for_one_person_in_a_file(engine: Engine, tmp_path: Path) -> None:
    me = new_id()
    card = {
        "card_no": "C1",
        "id_number": me,
        "card_type": "B",
        "status": "valid",
        "issued_on": "2022-01-01",
        "expires_on": "2027-01-01",
        "cancel_reason": None,
        "cancelled_on": None,
    }
    write_jsonl(tmp_path, "senior_cards.jsonl", [card, {**card, "card_no": "C2"}])
    problems = import_directory(engine, tmp_path, today=TODAY).problems()
    assert problems == [
        "senior_cards.jsonl:2: status: a second valid card for the same person (line 1); "
        "cancel one of them"
    ]


def test_conflict_with_an_issued_allowance_rejects_the_file(engine: Engine, tmp_path: Path) -> None:
    me = new_id()
    with write_transaction(engine) as conn:
        issue_allowance(conn, me, date(2026, 12, 1), Decimal("60.00"), "app-1")
    write_jsonl(
        tmp_path,
        "allowances.jsonl",
        [
            {
                "id_number": me,
                "status": "active",
                "start_date": "2021-01-01",
                "monthly_amount": "60.00",
            }
        ],
    )
    report = import_directory(engine, tmp_path, today=TODAY)
    assert not report.ok
    assert "conflicts with records already in the registry" in report.problems()[0]
    # a stopped imported allowance sits next to the issued one
    write_jsonl(
        tmp_path,
        "allowances.jsonl",
        [
            {
                "id_number": me,
                "status": "stopped",
                "start_date": "2021-01-01",
                "monthly_amount": "60.00",
            }
        ],
    )
    assert import_directory(engine, tmp_path, today=TODAY).ok
    rows = _rows(engine, "SELECT source, status FROM allowances ORDER BY source")
    assert rows == [("import", "stopped"), ("miaopi", "active")]


def test_empty_directory_is_a_problem(engine: Engine, tmp_path: Path) -> None:
    report = import_directory(engine, tmp_path, today=TODAY)
    assert not report.ok and "no registry files found" in report.problems()[0]


def test_progress_is_reported(engine: Engine, tmp_path: Path) -> None:
    write_jsonl(tmp_path, "population.jsonl", [person(new_id())])
    seen: list[tuple[str, int, int]] = []
    import_directory(engine, tmp_path, today=TODAY, progress=lambda *a: seen.append(a))
    size = (tmp_path / "population.jsonl").stat().st_size
    assert seen[-1] == ("population.jsonl", size, size)


def test_byte_order_mark_and_crlf_are_tolerated(engine: Engine, tmp_path: Path) -> None:
    me = new_id()
    line = orjson.dumps(person(me))
    (tmp_path / "population.jsonl").write_bytes(b"\xef\xbb\xbf" + line + b"\r\n\r\n")
    report = import_directory(engine, tmp_path, today=TODAY)
    assert report.ok, report.problems()
    assert _rows(engine, "SELECT id_number FROM population") == [(me,)]


def test_an_import_leaves_fresh_planner_statistics(pg_engine: Engine, tmp_path: Path) -> None:
    """Autovacuum may be off (it is on the test machine): the import analyses what it loaded."""
    engine = pg_engine  # planner statistics are PostgreSQL's
    with engine.begin() as conn:  # the next test's fixture empties the rest of the registry
        conn.exec_driver_sql("TRUNCATE population CASCADE")
    write_jsonl(tmp_path, "population.jsonl", [person(new_id()) for _ in range(30)])
    assert import_directory(engine, tmp_path, today=TODAY).ok
    analysed = _rows(
        engine,
        "SELECT reltuples FROM pg_class WHERE relname = 'population'",
    )
    assert analysed[0][0] == 30  # without ANALYZE: -1 (never analysed) or an old count
