"""Lock fixtures: a SQLite store in a temporary directory, and a PostgreSQL database of its own.

PostgreSQL: ``SCEP_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) is
used to create a throwaway database for the session. An unreachable server skips the PostgreSQL cases
locally and fails them when ``CI`` is set.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import NoReturn

import pytest
from sqlalchemy import URL, Engine, create_engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def autocommit_engine(url: URL | str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 5})


def _unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[URL]:
    """A fresh database for this test session, dropped at the end."""
    server = make_url(os.environ.get("SCEP_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    try:
        admin = autocommit_engine(server)
    except ImportError as exc:
        _unavailable(f"driver missing ({exc})")
    name = f"scep_locks_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        admin.dispose()
        _unavailable(str(exc.orig).strip().splitlines()[0])
    try:
        yield server.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_database: URL) -> Iterator[str]:
    """A URL whose connections work in an empty schema of their own (advisory locks are per database,
    the lock keys per schema)."""
    schema = f"t_{secrets.token_hex(6)}"
    admin = autocommit_engine(postgres_database)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = postgres_database.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()


@pytest.fixture
def admin(postgres_database: URL) -> Iterator[Engine]:
    """An autocommit engine on the session's database, to look at pg_locks and end sessions."""
    engine = autocommit_engine(postgres_database)
    yield engine
    engine.dispose()
