"""Opening the database and keeping its schema current.

SQLite runs in WAL mode with one writer at a time: write transactions start with ``BEGIN IMMEDIATE`` so
they queue on the busy timeout instead of failing on a lock upgrade, ``synchronous = FULL`` makes a
committed issuance survive a power loss too, and the database file and its -wal/-shm files are
owner-only. PostgreSQL runs at READ COMMITTED with a connect timeout; its races are settled by the
repositories (unique constraints, conditional updates, ``FOR UPDATE``). Migrations run under a
database-wide lock so that several processes starting at once apply them one after the other.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from scep_server.errors import StoreError
from scep_server.store.base import Repository, describe, guard
from scep_server.store.writer import WRITE_OPTION

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 5000
SQLITE_PRAGMAS = (
    f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",
    "PRAGMA journal_mode = WAL",
    # NORMAL may lose the last commits on a power loss: an issued certificate must not be forgotten.
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
)
POSTGRES_CONNECT_TIMEOUT_S = 10
PG_MIGRATION_LOCK = 0x5CE95E4E  # pg_advisory_xact_lock key serialising concurrent migrate() calls


def open_engine(url: str, *, pool_size: int = 5) -> Engine:
    """The engine for ``url``, set up for this store; no connection is made yet."""
    if pool_size < 1:
        raise ValueError("pool_size must be >= 1")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is no number, say
        raise StoreError("the database URL cannot be parsed") from None
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    # A database server can drop a pooled connection; a SQLite file cannot, so it skips the extra
    # round trip a ping costs on every checkout.
    pre_ping = parsed.get_backend_name() != "sqlite"
    try:
        engine = create_engine(parsed, pool_size=pool_size, pool_pre_ping=pre_ping, connect_args=connect_args)
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"unsupported database URL: {exc}") from None
    if engine.dialect.name == "sqlite":
        _private_sqlite_file(parsed)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    # The query string may carry a password too (psycopg accepts ?password=).
    log.info("store: %s", parsed.set(query={}).render_as_string(hide_password=True))
    return engine


def alembic_config() -> Config:
    """The Alembic configuration of the store's migrations (no database URL: callers pass a connection)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


class SchemaRepository(Repository):
    """The schema's version and the database's reachability."""

    def migrate(self) -> None:
        """Upgrade the schema to the newest migration; a no-op when it is current.

        Runs in one transaction that first takes a database-wide lock (SQLite ``BEGIN IMMEDIATE``,
        PostgreSQL advisory lock), so concurrent callers run one after the other and the later ones
        find the schema current.
        """
        config = alembic_config()
        with guard(), self._writer.connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(PG_MIGRATION_LOCK)))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def schema_is_current(self) -> bool:
        heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
        with guard(), self._engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
        return current == heads

    def ping(self) -> bool:
        """True when the database answers a trivial query (for health checks)."""
        try:
            with self._engine.connect() as conn:
                conn.execute(select(1)).scalar_one()
        except SQLAlchemyError as exc:
            log.warning("store ping failed: %s", describe(exc))
            return False
        return True


def _private_sqlite_file(url: URL) -> None:
    """Create the database file owner-only (0600) before SQLite does, and take group and other access
    from an existing one and its -wal/-shm files (SQLite creates those with the database file's mode)."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("uri"):
        return
    path = Path(database)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        for each in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
            _owner_only(each)
    except OSError as exc:  # e.g. a missing directory: connecting reports it as the store being unavailable
        log.debug("store: cannot prepare %s: %s", path, exc.strerror)


def _owner_only(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        path.chmod(mode & 0o700)
        log.warning("store: %s was readable by others (mode %o); it is now owner-only", path, mode)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 module (it skips it for SELECT); _sqlite_on_begin emits it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            if "journal_mode" in pragma:
                _switch_to_wal(cursor, pragma)
            else:
                cursor.execute(pragma)
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any, pragma: str) -> None:
    # WAL is persistent: once set, this is a read. Switching a new database needs an exclusive lock
    # and SQLite answers SQLITE_BUSY at once, without the busy handler, when another connection is
    # opening it at the same moment, so retry for up to the busy timeout.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute(pragma)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_on_begin(conn: Connection) -> None:
    # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when another
    # writer got in between; IMMEDIATE takes the write lock up front and waits on busy_timeout.
    immediate = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
