"""Start-up: policies that do not fit the registries are refused; pools and policy records hold."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from approval_service.errors import PolicyFolderError
from approval_service.service.container import Container
from approval_service.service.records import policy_versions, remember_policy
from approval_service.settings import Settings
from data_lookups.database import ensure_schema, make_engine, read_connection, write_transaction

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "      status: text\n",
            "      status: text\n      nickname: text\n",
            "no field `person.nickname`",
        ),
        (
            "      status: text\n",
            "      status: text\n      gender: int\n",
            "`person.gender` is declared int",
        ),
        ("issue: new_card", "issue: print_card", "is not an issuance action"),
    ],
)
def test_policy_that_does_not_fit_the_registries_is_refused(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    policy = rules / "senior-card-new.yaml"
    text = policy.read_text(encoding="utf-8")
    assert old in text
    policy.write_text(text.replace(old, new, 1), encoding="utf-8")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", rules_dir=rules)
    with pytest.raises(PolicyFolderError, match=message) as info:
        Container.build(settings)
    assert "senior-card-new.yaml" in str(info.value)


@pytest.mark.parametrize("pool_size", [1, 4])
def test_the_process_keeps_at_most_db_pool_size_connections_open(
    pg_database: Callable[[str], str], pool_size: int
) -> None:
    """MIAOPI_DB_POOL_SIZE bounds what a process keeps open in all, whatever uses it:
    registry reads (their own pool, without pings) and every other database access."""
    url = pg_database(f"pool{pool_size}")
    container = Container.build(
        Settings(database_url=url, rules_dir=ROOT / "rules", db_pool_size=pool_size)
    )
    barrier = threading.Barrier(16)

    def busy(n: int) -> None:
        barrier.wait()
        for _ in range(20):
            if n % 2:
                container.sql_facts.stamp("11010519491231002X")
            else:
                with read_connection(container.engine) as conn:
                    conn.exec_driver_sql("SELECT pg_sleep(0.001)")

    try:
        threads = [threading.Thread(target=busy, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with psycopg.connect(url, autocommit=True) as probe:
            (kept,) = probe.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone() or (0,)
    finally:
        container.close()
    assert 1 <= kept <= pool_size


def test_workers_starting_together_on_a_new_policy_all_start(
    pg_database: Callable[[str], str],
) -> None:
    """Every worker records the loaded policies at start-up. Two that record the same new
    one at once: the second waits on the first's uncommitted row, then finds it there.
    (It used to read no row, insert, and die of a duplicate key when the first committed:
    seen with two workers starting together on a fresh database.)"""
    url = pg_database("policy_race")
    engine = make_engine(url)
    ensure_schema(engine)
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    args = ("ab" * 32, "elderly-allowance", "2026.1", "item: elderly-allowance\n", now)
    failures: list[BaseException] = []

    def second() -> None:
        try:
            with write_transaction(engine) as conn:
                remember_policy(conn, *args)
        except BaseException as error:  # reported by the assertion below
            failures.append(error)

    try:
        with engine.connect() as first:
            first.begin()
            remember_policy(first, *args)
            racer = threading.Thread(target=second)
            racer.start()
            with psycopg.connect(url, autocommit=True) as probe:
                for _ in range(200):  # until the second waits on the first's row
                    (waiting,) = probe.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND wait_event_type = 'Lock'"
                    ).fetchone() or (0,)
                    if waiting:
                        break
                    time.sleep(0.02)
            assert waiting == 1
            first.commit()
        racer.join(timeout=10)
        assert not racer.is_alive() and failures == []
        with read_connection(engine) as conn:
            assert conn.execute(select(func.count()).select_from(policy_versions)).scalar() == 1
    finally:
        engine.dispose()


def test_the_writer_lingers_as_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MIAOPI_GROUP_LINGER_MS reaches the group-commit writer; a negative one is refused."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    assert Settings(database_url=url).group_linger_ms == 2.0
    monkeypatch.setenv("MIAOPI_GROUP_LINGER_MS", "0.5")
    container = Container.build(Settings(database_url=url, rules_dir=ROOT / "rules"))
    try:
        assert container.committer.linger == pytest.approx(0.0005)
    finally:
        container.close()
    monkeypatch.setenv("MIAOPI_GROUP_LINGER_MS", "-1")
    with pytest.raises(ValidationError, match="group_linger_ms"):
        Settings(database_url=url)
