from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, column, insert, inspect, text
from sqlalchemy import table as table_clause

from scep_server.errors import StoreError, StoreUnavailable
from scep_server.store import Store, TransactionState
from scep_server.store.repository import _alembic_config
from scep_server.store.tables import UTCDateTime, metadata

TABLES = {"certificates", "scep_transactions", "crl_state", "scep_events", "intune_outbox", "intune_revocations"}
HEAD = "0004"


def _schema_diff(store: Store, target: MetaData) -> list[object]:
    with store.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), target))


def _version_rows(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def _run_alembic(store: Store, direction: str, revision: str) -> None:
    """Upgrade or downgrade to ``revision`` the way ``Store.migrate`` runs Alembic."""
    config = _alembic_config()
    with store.engine.connect() as conn, conn.begin():
        config.attributes["connection"] = conn
        getattr(command, direction)(config, revision)


# scep_transactions as migration 0001 created it.
TRANSACTIONS_0001 = table_clause(
    "scep_transactions",
    column("profile", String),
    column("transaction_id", String),
    column("message_type", Integer),
    column("state", String),
    column("csr_sha256", String),
    column("csr_der", LargeBinary),
    column("requester_ip", String),
    column("created_at", UTCDateTime()),
    column("updated_at", UTCDateTime()),
)


def test_migrate_creates_the_schema_and_is_idempotent(db_url: str) -> None:
    with Store.open(db_url) as store:
        assert not store.schema_is_current()
        store.migrate()
        assert store.schema_is_current()
        store.migrate()
        assert store.schema_is_current()
        assert TABLES <= set(inspect(store.engine).get_table_names())
        assert _version_rows(store) == [HEAD]


def test_migrated_schema_matches_tables_metadata(store: Store) -> None:
    assert _schema_diff(store, metadata) == []


def test_0002_upgrades_a_0001_database_with_rows(db_url: str) -> None:
    created = datetime(2024, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
    with Store.open(db_url) as store:
        _run_alembic(store, "upgrade", "0001")
        assert _version_rows(store) == ["0001"]
        with store.engine.begin() as conn:
            conn.execute(
                insert(TRANSACTIONS_0001).values(
                    profile="default",
                    transaction_id="before-0002",
                    message_type=19,
                    state="pending",
                    csr_sha256="00" * 32,
                    csr_der=b"csr",
                    requester_ip="192.0.2.1",
                    created_at=created,
                    updated_at=created,
                )
            )
        assert not store.schema_is_current()
        store.migrate()
        assert _version_rows(store) == [HEAD]
        assert _schema_diff(store, metadata) == []
        record = store.get_transaction("default", "before-0002")
        assert store.outbox_counts() == {"pending": 0, "delivered": 0, "dead": 0}
    assert record is not None
    assert (record.state, record.csr_der, record.created_at, record.updated_at) == (
        TransactionState.PENDING,
        b"csr",
        created,
        created,
    )
    assert (record.deferred, record.attempts, record.next_attempt_at, record.last_error) == (False, 0, None, None)


def test_0002_downgrades_to_0001_and_back(store: Store) -> None:
    store.claim_transaction(
        profile="default", transaction_id="kept", message_type=19, csr_der=b"csr", requester_ip=None
    )
    _run_alembic(store, "downgrade", "0001")
    inspector = inspect(store.engine)
    assert "intune_outbox" not in inspector.get_table_names()
    columns = {c["name"] for c in inspector.get_columns("scep_transactions")}
    assert not columns & {"deferred", "attempts", "next_attempt_at", "last_error"}
    assert [c["name"] for c in inspector.get_check_constraints("scep_transactions")]
    assert [fk["referred_table"] for fk in inspector.get_foreign_keys("scep_transactions")] == ["certificates"]
    store.migrate()
    assert _schema_diff(store, metadata) == []
    record = store.get_transaction("default", "kept")
    assert record is not None and record.csr_der == b"csr" and record.deferred is False


def test_schema_comparison_detects_drift(store: Store) -> None:
    drifted = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["certificates"].append_column(Column("extra", String(10)))
    diff = _schema_diff(store, drifted)
    assert [d[0] for d in diff if isinstance(d, tuple)] == ["add_column"]


def test_concurrent_migrate_calls_all_succeed(db_url: str) -> None:
    stores = [Store.open(db_url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))

    def migrate(store: Store) -> None:
        barrier.wait()
        store.migrate()

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            list(pool.map(migrate, stores))
        assert all(store.schema_is_current() for store in stores)
        assert _version_rows(stores[0]) == [HEAD]
    finally:
        for store in stores:
            store.close()


def test_ping_answers_on_a_reachable_database(db_url: str) -> None:
    with Store.open(db_url) as store:
        assert store.ping() is True


def test_sqlite_connections_get_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'x.db'}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_unreachable_sqlite_is_unavailable(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'missing' / 'x.db'}") as store:
        assert store.ping() is False
        with pytest.raises(StoreUnavailable):
            store.get_transaction("default", "t")
        with pytest.raises(StoreUnavailable):
            store.migrate()


def test_unreachable_postgres_is_unavailable() -> None:
    with Store.open("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2") as store:
        assert store.ping() is False
        with pytest.raises(StoreUnavailable):
            store.count_certificates()


@pytest.mark.parametrize("url", ["not a url", "nosuchdialect://host/db"])
def test_open_rejects_bad_urls_without_echoing_them(url: str) -> None:
    with pytest.raises(StoreError) as info:
        Store.open(url)
    assert url not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://scep:s3cr3t-pw@127.0.0.1:1/none?connect_timeout=2",
        "postgresql+psycopg://scep@127.0.0.1:1/none?connect_timeout=2&password=s3cr3t-pw",
    ],
)
def test_the_password_stays_out_of_errors_and_logs(url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="scep_server.store")
    with Store.open(url) as store:
        assert store.ping() is False
        with pytest.raises(StoreUnavailable) as info:
            store.count_certificates()
    assert "s3cr3t-pw" not in str(info.value)
    assert "127.0.0.1" in caplog.text
    assert "s3cr3t-pw" not in caplog.text


def test_open_rejects_a_bad_pool_size() -> None:
    with pytest.raises(ValueError):
        Store.open("sqlite://", pool_size=0)
