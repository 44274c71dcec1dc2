"""Start-up refuses policies that read facts the registries do not provide, or unknown actions."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from approval_service.errors import PolicyFolderError
from approval_service.service.container import Container
from approval_service.settings import Settings
from data_lookups.database import read_connection

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
