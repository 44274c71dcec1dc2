"""Engines and schema: ``make_engine(url)``, ``ensure_schema(engine)``, error translation.

``make_engine`` accepts the URLs operators write (``postgresql://user@host/db``,
``sqlite:///path``) and picks the driver (psycopg 3) and pragmas (SQLite: WAL,
busy timeout, real ``BEGIN`` so that a transaction is one snapshot).

``ensure_schema`` runs the Alembic migrations in ``data_lookups/migrations`` up to
head. Every command calls it; it is idempotent and safe when several processes
call it at once (PostgreSQL: a session advisory lock; SQLite: a file lock).
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, exc, make_url

from approval_service.errors import RegistryError, RegistryUnavailable

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: arbitrary constant: the advisory-lock key serialising migrations on PostgreSQL
_MIGRATION_LOCK_KEY = 0x6D69616F7069  # "miaopi"
_WRITE_OPTION = "miaopi_write"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An Engine for a plain PostgreSQL or SQLite URL (driver and pragmas chosen here)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed.render_as_string(hide_password=False), **kwargs)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    # psycopg prepares nothing by itself on these connections: when it has prepared any,
    # its rollback deallocates every statement of the session, those the group writer's
    # batches prepared too (data_lookups.statement_batch), which then prepare instead
    kwargs.setdefault("connect_args", {"connect_timeout": 5, "prepare_threshold": None})
    return create_engine(parsed, **kwargs)


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("check_same_thread", False)
    connect_args.setdefault("timeout", 30)
    engine = create_engine(url, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # take transaction control away from pysqlite; the "begin" hook emits BEGIN
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def is_postgres(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


@contextmanager
def unavailable_as_registry_error() -> Iterator[None]:
    """Turn "cannot reach the database" into :class:`RegistryUnavailable` (from the cause)."""
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError) as error:
        if isinstance(error, exc.OperationalError) and not _is_connectivity(error):
            raise
        raise RegistryUnavailable("the registry database cannot be reached; retry later") from error


def connection_lost(error: psycopg.OperationalError) -> bool:
    """Whether a psycopg error means the database cannot be reached (no SQLSTATE, a
    connection exception, or the server shutting the session down), as opposed to an
    error of this transaction (a deadlock, a serialisation failure, a lock timeout)."""
    state = error.sqlstate
    return state is None or state.startswith("08") or state.startswith("57P0")


def _is_connectivity(error: exc.OperationalError) -> bool:
    if error.connection_invalidated:
        return True
    text = str(error.orig).lower()
    markers = (
        "connect",
        "server closed",
        "unable to open",
        "timeout",
        "refused",
        "database is locked",
    )
    return any(m in text for m in markers)


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A connection for reads; "cannot reach the database" becomes :class:`RegistryUnavailable`."""
    with unavailable_as_registry_error(), engine.connect() as conn:
        yield conn


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a write transaction (SQLite: ``BEGIN IMMEDIATE``), committed on exit."""
    with unavailable_as_registry_error(), engine.connect() as conn:
        conn = conn.execution_options(**write_options())
        with conn.begin():
            yield conn


def write_options() -> dict[str, Any]:
    """Execution options that make a connection's transactions writers (SQLite: IMMEDIATE)."""
    return {_WRITE_OPTION: True}


def _alembic_config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    return cfg


def _head() -> str | None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def ensure_schema(engine: Engine) -> None:
    """Create or migrate the schema to the newest revision; idempotent and concurrency-safe.

    Raises :class:`RegistryUnavailable` when the database cannot be reached and
    :class:`RegistryError` when it holds a revision this release does not know.
    """
    head = _head()
    try:
        with unavailable_as_registry_error():
            if is_postgres(engine):
                _ensure_postgres(engine, head)
            else:
                _ensure_sqlite(engine, head)
    except CommandError as error:
        raise RegistryError(
            f"cannot migrate the database schema to {head}: {error} "
            "(was it migrated by a newer release of miaopi?)"
        ) from error


def _ensure_postgres(engine: Engine, head: str | None) -> None:
    with engine.connect() as conn:
        if _current(conn) == head:
            conn.rollback()
            return
        conn.rollback()
        conn.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATION_LOCK_KEY})")
        conn.commit()
        try:
            if _current(conn) != head:
                log.info("migrating the registry schema to %s", head)
                command.upgrade(_alembic_config(conn), "head")
            conn.commit()
        finally:
            conn.rollback()
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK_KEY})")
            conn.commit()


def _ensure_sqlite(engine: Engine, head: str | None) -> None:
    database = engine.url.database
    if not database or database == ":memory:":
        with engine.connect() as conn:
            if _current(conn) != head:
                command.upgrade(_alembic_config(conn), "head")
            conn.commit()
        return
    lock_path = Path(database).expanduser().with_name(Path(database).name + ".migrate-lock")
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            with engine.connect() as conn:
                if _current(conn) != head:
                    log.info("migrating the registry schema to %s", head)
                    command.upgrade(_alembic_config(conn), "head")
                conn.commit()
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
