"""Engines and schema: URL handling, pragmas, idempotent concurrent migration, outages."""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest
from sqlalchemy import Engine, inspect

from approval_service.errors import RegistryError, RegistryUnavailable
from data_lookups.database import ensure_schema, make_engine, write_transaction
from data_lookups.facts import ALL_FACTS, SqlFactSource
from data_lookups.importer import import_directory
from data_lookups.models import Base


def test_plain_postgres_url_gets_the_psycopg_driver() -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:5432/x")
    assert engine.url.drivername == "postgresql+psycopg"
    engine.dispose()


def test_sqlite_creates_its_folder_and_uses_wal(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/deep/er/registry.sqlite3")
    ensure_schema(engine)
    ensure_schema(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    tables = set(inspect(engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    engine.dispose()


@pytest.fixture
def fresh_pg_url(registry_pg_url: str) -> Iterator[str]:
    admin, name = registry_pg_url.rsplit("/", 1)
    own = f"{name}_{secrets.token_hex(3)}"
    with psycopg.connect(registry_pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{own}"')
    yield f"{admin}/{own}"
    with psycopg.connect(registry_pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{own}" WITH (FORCE)')


def test_concurrent_ensure_schema_on_a_fresh_postgres(fresh_pg_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def migrate() -> None:
        engine = make_engine(fresh_pg_url)
        try:
            barrier.wait()
            ensure_schema(engine)
        except BaseException as error:
            errors.append(error)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    engine = make_engine(fresh_pg_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT epoch FROM registry_state").all() == [(0,)]
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    engine.dispose()


def test_unreachable_database_is_registry_unavailable(tmp_path: Path) -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(RegistryUnavailable) as info:
        ensure_schema(engine)
    assert info.value.__cause__ is not None
    with pytest.raises(RegistryUnavailable):
        SqlFactSource(engine).gather("11010519491231002X", ALL_FACTS)
    with pytest.raises(RegistryUnavailable):
        SqlFactSource(engine).stamp("11010519491231002X")
    with pytest.raises(RegistryUnavailable), write_transaction(engine):
        pass
    (tmp_path / "population.jsonl").write_text("")
    with pytest.raises(RegistryUnavailable):
        import_directory(engine, tmp_path)


@pytest.mark.parametrize("pings", [True, False], ids=["pinging-pool", "reads-without-ping"])
def test_reads_survive_the_server_dropping_pooled_connections(
    pg_engine: Engine, pings: bool
) -> None:
    """Also through a reads engine whose pool does not ping (as the container builds it):
    the read itself retries on a fresh connection."""
    url = pg_engine.url.render_as_string(hide_password=False)
    source = SqlFactSource(pg_engine, None if pings else make_engine(url, pool_pre_ping=False))
    try:
        source.stamp("11010519491231002X")  # leaves a connection in the pool
        with pg_engine.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            conn.commit()
        assert source.gather("11010519491231002X", ALL_FACTS)["person"] is None
    finally:
        source.close()


def test_concurrent_ensure_schema_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.sqlite3"
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def migrate() -> None:
        engine = make_engine(url)
        try:
            barrier.wait()
            ensure_schema(engine)
        except BaseException as error:
            errors.append(error)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_schema_from_a_newer_release_is_a_clear_error(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/newer.sqlite3")
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
    with pytest.raises(RegistryError, match="newer release"):
        ensure_schema(engine)
    engine.dispose()


def test_relative_sqlite_path_and_postgres_alias(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = make_engine("sqlite:///var/miaopi.sqlite3")  # the settings default
    ensure_schema(engine)
    assert (tmp_path / "var" / "miaopi.sqlite3").is_file()
    engine.dispose()
    alias = make_engine("postgres://postgres@127.0.0.1/x")
    assert alias.url.drivername == "postgresql+psycopg"
    alias.dispose()


def test_concurrent_ensure_schema_from_separate_processes(fresh_pg_url: str) -> None:
    code = (
        "import sys\n"
        "from data_lookups.database import ensure_schema, make_engine\n"
        "ensure_schema(make_engine(sys.argv[1]))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, fresh_pg_url], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    engine = make_engine(fresh_pg_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    engine.dispose()


def test_records_written_as_jsonb_before_0012_read_the_same_after_it(fresh_pg_url: str) -> None:
    """An operator's upgrade keeps every stored record: the jsonb columns of 0011 become
    json (migration 0012) and read back the same values."""
    from alembic import command

    from approval_service.service import records
    from data_lookups.database import _alembic_config

    engine = make_engine(fresh_pg_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0011")
    document = {"application_id": "a1", "result": {"amount": "2400.00"}, "reasons": []}
    trace = [{"code": "AGE_BELOW_MIN", "outcome": "failed", "values": {"age": 79}}]
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO applications (id, channel, item, applicant_id, applicant_masked, "
            "policy_version, policy_sha256, business_date, decision, reasons, result, facts, "
            "trace, form, timings, decided_at, document) VALUES ('a1', 'portal', "
            "'elderly-allowance', '341602194001010011', '341602********0011', '2025.1', "
            "'0', '2026-12-01', 'rejected', '[]', '{}', '{\"person\": null}', %(trace)s, "
            "'{}', '{\"total_ms\": 1.5}', now(), %(doc)s)",
            {"trace": orjson.dumps(trace).decode(), "doc": orjson.dumps(document).decode()},
        )
    ensure_schema(engine)
    with engine.connect() as conn:
        types = dict(
            conn.exec_driver_sql(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'applications' AND data_type LIKE 'json%%'"
            ).all()
        )
        row = records.get_application(conn, "a1")
    assert types == dict.fromkeys(
        ("reasons", "result", "facts", "trace", "form", "timings", "document"), "json"
    )
    assert row is not None
    assert (row["document"], row["trace"], row["facts"]) == (document, trace, {"person": None})
    assert row["timings"] == {"total_ms": 1.5}
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A database of each backend migrated to the newest revision."""
    if request.param == "postgresql":
        engine = make_engine(request.getfixturevalue("fresh_pg_url"))
    else:
        engine = make_engine(f"sqlite:///{tmp_path}/records.sqlite3")
    ensure_schema(engine)
    yield engine
    engine.dispose()


def test_decision_records_keep_only_the_indexes_a_query_uses(migrated: Engine) -> None:
    """Each index is written by every decision (migration 0016): the review queue's holds
    open referrals only, the statistics' the business date; nothing else but the keys."""
    indexes = inspect(migrated).get_indexes("applications")
    found = {
        i["name"]: tuple(i["column_names"])
        for i in indexes
        if not i.get("duplicates_constraint")  # PostgreSQL lists the constraint's index too
    }
    assert found == {
        "ix_applications_open_referrals": ("deadline", "decided_at"),
        "ix_applications_business_date": ("business_date",),
    }
    unique = inspect(migrated).get_unique_constraints("applications")
    assert [tuple(u["column_names"]) for u in unique] == [("channel", "idempotency_key")]
    from approval_service.service import records

    statement = records.open_referrals_statement().compile(dialect=migrated.dialect)
    assert not statement.params  # nothing a generic plan could not see (see records.py)
    with migrated.connect() as conn:
        if migrated.dialect.name == "postgresql":
            definition = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_applications_open_referrals'"
            ).scalar_one()
            conn.exec_driver_sql("SET enable_seqscan = off")  # an empty table: make it choose
            plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {statement}"))
        else:
            definition = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_applications_open_referrals'"
            ).scalar_one()
            plan = "\n".join(
                str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}")
            )
        assert "WHERE" in definition and "'open'" in definition
        assert "ix_applications_open_referrals" in plan  # the queue reads its own index
        conn.rollback()


def test_migration_0016_goes_down_and_up_again(migrated: Engine) -> None:
    """An operator can roll 0016 back (the five indexes of before) and forward again."""
    from alembic import command

    from data_lookups.database import _alembic_config

    def names() -> set[str]:
        return {
            str(i["name"])
            for i in inspect(migrated).get_indexes("applications")
            if not i.get("duplicates_constraint")
        }

    with migrated.begin() as conn:
        command.downgrade(_alembic_config(conn), "0015")
    assert names() == {
        "ix_applications_item_decided_at",
        "ix_applications_review",
        "ix_applications_applicant",
    }
    ensure_schema(migrated)
    assert names() == {"ix_applications_open_referrals", "ix_applications_business_date"}


@pytest.mark.parametrize("missing", ["sql-null", "json-null"])
def test_migration_0017_goes_down_only_while_every_record_has_a_document(
    migrated: Engine, missing: str
) -> None:
    """Records written since 0017 may keep no document (SQL NULL as the service writes
    it, or JSON null as SQLAlchemy writes a None): going below 0017 is refused, with the
    reason, and nothing changes; without such records the column is ``NOT NULL`` again,
    and a record of before (its document stored) comes through the upgrade whole."""
    from alembic import command

    from approval_service.service.records import applications
    from data_lookups.database import _alembic_config
    from tests.service.record_rows import new_id, record_row

    def document_nullable() -> bool:
        columns = inspect(migrated).get_columns("applications")
        return next(bool(c["nullable"]) for c in columns if c["name"] == "document")

    def version() -> str:
        with migrated.connect() as conn:
            return str(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar())

    head = version()
    row = {**record_row(new_id()), "result": {}}
    if missing == "sql-null":
        del row["document"]  # as the service writes a record
    else:
        row["document"] = None  # JSON null
    with migrated.begin() as conn:
        conn.execute(applications.insert(), [row])
    refused = pytest.raises(RuntimeError, match="1 decision records keep no document")
    with refused, migrated.begin() as conn:
        command.downgrade(_alembic_config(conn), "0016")
    assert document_nullable() and version() == head  # the refused downgrade left nothing
    with migrated.begin() as conn:
        assert conn.execute(applications.select()).mappings().one()["id"] == row["id"]
        conn.execute(applications.delete())
    with migrated.begin() as conn:
        command.downgrade(_alembic_config(conn), "0016")
    assert not document_nullable()
    before = {**record_row(new_id()), "result": {}, "document": {"written": "before 0017"}}
    with migrated.begin() as conn:
        conn.execute(applications.insert(), [before])
    ensure_schema(migrated)
    assert document_nullable() and version() == head
    with migrated.connect() as conn:
        kept = conn.execute(applications.select()).mappings().one()
    assert (kept["id"], kept["document"]) == (before["id"], {"written": "before 0017"})


def test_migration_0018_keys_the_outbox_by_dedup_key_and_keeps_every_message(
    migrated: Engine,
) -> None:
    """Two indexes per message since 0018 (the key and the due messages'), and an operator
    can go down (every message given an id) and up again without losing one."""
    from alembic import command

    from approval_service.service.records import outbox
    from data_lookups.database import _alembic_config
    from tests.service.record_rows import new_id, outbox_row

    def layout() -> tuple[list[str], list[list[str]], set[str]]:
        found = inspect(migrated)
        indexes = {
            str(i["name"])
            for i in found.get_indexes("outbox")
            if not i.get("duplicates_constraint")
        }
        unique = [list(u["column_names"]) for u in found.get_unique_constraints("outbox")]
        return found.get_pk_constraint("outbox")["constrained_columns"], unique, indexes

    assert layout() == (["dedup_key"], [], {"ix_outbox_due"})
    assert "id" not in {c["name"] for c in inspect(migrated).get_columns("outbox")}
    messages = [outbox_row(f"短信{n}", new_id()) for n in range(3)]
    with migrated.begin() as conn:
        conn.execute(outbox.insert(), messages)
        command.downgrade(_alembic_config(conn), "0017")
    assert layout() == (["id"], [["dedup_key"]], {"ix_outbox_due"})
    with migrated.connect() as conn:
        ids = conn.exec_driver_sql("SELECT id, dedup_key FROM outbox").all()
    assert len({i for i, _ in ids}) == 3 and all(i for i, _ in ids)
    ensure_schema(migrated)
    assert layout() == (["dedup_key"], [], {"ix_outbox_due"})
    with migrated.connect() as conn:
        kept = conn.execute(outbox.select().order_by(outbox.c.dedup_key)).mappings().all()
    want = sorted(messages, key=lambda m: m["dedup_key"])
    assert [(m["dedup_key"], m["text"]) for m in kept] == [
        (m["dedup_key"], m["text"]) for m in want
    ]
