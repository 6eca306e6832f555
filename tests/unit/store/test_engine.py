"""Opening the database: URL checks, SQLite pragmas and file modes (finding 10 at rest), reachability."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, event

from scep_server.errors import StoreError, StoreUnavailable
from scep_server.store import NewCertificate, Store

Factory = Callable[..., NewCertificate]


def test_ping_answers_on_a_reachable_database(db_url: str) -> None:
    with Store.open(db_url) as store:
        assert store.ping() is True


def test_sqlite_connections_get_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'x.db'}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000


def test_finding5_sqlite_commits_with_synchronous_full(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'x.db'}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_sqlite_write_transactions_take_the_write_lock_up_front(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'x.db'}") as store:
        store.migrate()
        begins: list[str] = []

        def record(_conn: Connection, _cursor: object, statement: str, *_args: object) -> None:
            if statement.startswith("BEGIN"):
                begins.append(statement)

        event.listen(store.engine, "before_cursor_execute", record)
        store.list_operations()
        assert begins == ["BEGIN"]
        store.record_operation(profile="default", operation="PKIOperation", message_type=None,
                               transaction_id=None, outcome="issued", detail=None, requester_ip=None)
        assert begins == ["BEGIN", "BEGIN IMMEDIATE"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_finding10_sqlite_files_are_created_owner_only(tmp_path: Path, make_certificate: Factory) -> None:
    path = tmp_path / "x.db"
    previous = os.umask(0o022)
    try:
        with Store.open(f"sqlite:///{path}") as store:
            store.migrate()
            store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(1))
            files = [path, tmp_path / "x.db-wal", tmp_path / "x.db-shm"]
            assert all(each.exists() for each in files)
            assert [_mode(each) for each in files] == [0o600, 0o600, 0o600]
    finally:
        os.umask(previous)


def test_finding10_an_existing_readable_sqlite_file_is_made_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    path.touch()
    path.chmod(0o644)
    with Store.open(f"sqlite:///{path}") as store:
        assert store.ping()
    assert _mode(path) == 0o600


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
