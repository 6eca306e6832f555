"""Migrations: they build exactly the tables' schema, upgrade rows in place, go down and up again, and
concurrent ``migrate`` calls all succeed."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, column, insert, inspect, text
from sqlalchemy import table as table_clause

from scep_server.store import Store, TransactionState
from scep_server.store.engine import alembic_config
from scep_server.store.tables import UTCDateTime, metadata

TABLES = {
    "certificates", "scep_transactions", "crl_state", "scep_events", "intune_outbox", "intune_revocations",
    "published_crls", "audit_log", "audit_head", "api_tokens", "enrollment_steps", "device_sync_state",
    "otp_challenges",
}
HEAD = "0010"


def _schema_diff(store: Store, target: MetaData) -> list[object]:
    with store.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), target))


def _version_rows(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def _run_alembic(store: Store, direction: str, revision: str) -> None:
    """Upgrade or downgrade to ``revision`` the way ``Store.migrate`` runs Alembic."""
    config = alembic_config()
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
