"""Store fixtures: every repository test runs on a SQLite file and on PostgreSQL.

PostgreSQL (:mod:`tests.support.servers`): a throwaway database for the session, and each test gets its own
schema in it. An unreachable server skips the PostgreSQL cases locally and fails them when ``CI`` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scep_server.store import NewCertificate, Store
from tests.support.servers import postgres_database, postgres_url  # noqa: F401 (fixtures)


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
