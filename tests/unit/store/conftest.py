"""Store fixtures: every repository test runs on a SQLite file and on PostgreSQL.

PostgreSQL: ``SCEP_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) is
used to create a throwaway database for the session, and each test gets its own schema in it. An
unreachable server skips the PostgreSQL cases locally and fails them when ``CI`` is set.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import pytest
from sqlalchemy import URL, Engine, create_engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from scep_server.store import NewCertificate, Store

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _autocommit_engine(url: URL) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 5})


def _unavailable(reason: str) -> NoReturn:
    if _in_ci():
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[URL]:
    """A fresh database for this test session, dropped at the end."""
    server = make_url(os.environ.get("SCEP_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    try:
        admin = _autocommit_engine(server)
    except ImportError as exc:
        _unavailable(f"driver missing ({exc})")
    name = f"scep_test_{secrets.token_hex(6)}"
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
    """A URL whose connections work in an empty schema of their own."""
    schema = f"t_{secrets.token_hex(6)}"
    admin = _autocommit_engine(postgres_database)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = postgres_database.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty database, not migrated."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('store') / 'scep-server.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated store."""
    with Store.open(db_url, pool_size=10) as opened:
        opened.migrate()
        yield opened


CertificateFactory = Callable[..., NewCertificate]


@pytest.fixture
def make_certificate() -> CertificateFactory:
    """Build a ``NewCertificate``; keyword arguments override the defaults."""

    def build(serial: int, **overrides: Any) -> NewCertificate:
        now = datetime.now(UTC).replace(microsecond=0)
        values: dict[str, Any] = {
            "serial": serial,
            "issuer": "CN=Test CA,O=scep-server",
            "subject": f"CN=device-{serial:x}",
            "sans": (f"dns:device-{serial:x}.example", "email:a@example.com"),
            "not_before": now - timedelta(hours=1),
            "not_after": now + timedelta(days=365),
            "profile": "default",
            "transaction_id": None,
            "requester_ip": "192.0.2.10",
            "der": b"\x30\x82" + serial.to_bytes(21, "big"),
            "sha1_thumbprint": f"{serial:040X}"[-40:],
            "sha256_thumbprint": f"{serial:064X}"[-64:],
        }
        values.update(overrides)
        return NewCertificate(**values)

    return build
