"""Both lock kinds: a file lock between processes, an advisory lock between database sessions."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.pool import NullPool

from scep_server.jobs.locks import (
    CRL_PUBLISHING,
    INTUNE_REVOCATION_ROUND,
    INTUNE_REVOCATION_SYNC,
    OCSP_RESPONDER_RENEWAL,
    AdvisoryLock,
    FileLock,
    LockFactory,
    advisory_key,
)
from scep_server.store import Store
from tests.support.env import require

# Takes the lock named by argv[1] and says whether it got it, then lives until it is killed.
HOLDER = """
import sys, time
from pathlib import Path
from scep_server.jobs.locks import FileLock
print("held" if FileLock(Path(sys.argv[1]), "probe").try_acquire() else "busy", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def start_holder(path: Path, holders: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    holders.append(proc)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


# --- file lock ---------------------------------------------------------------------------------------


def test_file_lock_has_one_holder_across_processes_until_it_is_killed(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "crl-publishing.lock"
    first, said = start_holder(path, holders)
    assert said == "held"
    assert start_holder(path, holders)[1] == "busy"
    mine = FileLock(path, CRL_PUBLISHING)
    assert not mine.try_acquire() and not mine.held
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert mine.try_acquire() and mine.held  # the kernel let go of the dead holder's lock
    assert start_holder(path, holders)[1] == "busy"
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_file_lock_is_kept_by_its_holder_and_freed_by_release(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder, other = FileLock(path, "x"), FileLock(path, "x")
    assert holder.try_acquire()
    assert not other.try_acquire()  # flock: a second descriptor, even in this process, is refused
    assert holder.try_acquire() and holder.held
    holder.release()
    assert not holder.held
    assert other.try_acquire()
    assert not holder.try_acquire()
    holder.release()  # releasing what is not held changes nothing
    assert other.held


def test_a_removed_lock_file_is_taken_again(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder, other = FileLock(path, "x"), FileLock(path, "x")
    assert holder.try_acquire()
    path.unlink()
    assert holder.try_acquire() and path.exists()  # re-taken on the new file, which others now meet
    assert not other.try_acquire()


def test_file_lock_in_a_missing_directory_is_not_held(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "missing" / "x.lock", "x")
    assert not lock.try_acquire() and not lock.held


def test_sqlite_locks_are_files_beside_the_database(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'db' / 'scep-server.db'}") as store:
        (tmp_path / "db").mkdir()
        lock = LockFactory(store)(INTUNE_REVOCATION_ROUND)
        assert isinstance(lock, FileLock)
        assert lock.path == (tmp_path / "db" / "intune-revocations.lock").resolve()
        assert lock.try_acquire()
        lock.release()


def test_an_in_memory_database_gets_private_lock_files() -> None:
    with Store.open("sqlite://") as one, Store.open("sqlite://") as two:
        first, second = LockFactory(one)("x"), LockFactory(two)("x")
        assert isinstance(first, FileLock) and isinstance(second, FileLock)
        assert first.path != second.path
        assert first.try_acquire() and second.try_acquire()  # two databases, nothing shared
        first.release()
        second.release()


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden"])
def test_lock_names_must_be_plain(tmp_path: Path, name: str) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'db'}") as store, pytest.raises(ValueError):
        LockFactory(store)(name)


def test_other_databases_have_no_lock() -> None:
    store = SimpleNamespace(engine=SimpleNamespace(dialect=SimpleNamespace(name="mysql")))
    with pytest.raises(ValueError, match="mysql"):
        LockFactory(store)  # type: ignore[arg-type]


def test_lock_names_are_distinct() -> None:
    names = {CRL_PUBLISHING, OCSP_RESPONDER_RENEWAL, INTUNE_REVOCATION_SYNC, INTUNE_REVOCATION_ROUND}
    assert len(names) == 4


# --- advisory lock -----------------------------------------------------------------------------------


def test_advisory_keys_are_stable_signed_64_bit_and_distinct() -> None:
    # The key must not change between releases: replicas of both meet on it during a rolling upgrade.
    assert advisory_key(CRL_PUBLISHING, "public") == 3082239633104229849
    keys = {advisory_key(name, schema) for name in ("a", "b", CRL_PUBLISHING) for schema in ("public", "other")}
    assert len(keys) == 6
    assert all(-(1 << 63) <= key < 1 << 63 for key in keys)
    assert any(key < 0 for key in (advisory_key(f"n{i}", "public") for i in range(64)))  # the whole bigint range


def lock_engine(url: str) -> Engine:
    return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def holder_pids(admin: Engine, key: int) -> list[int]:
    """Backends holding advisory lock ``key`` in the database of ``admin``."""
    query = text(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = :high AND objid = :low"
    )
    with admin.connect() as conn:
        rows = conn.execute(query, {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF})
        return [int(pid) for pid in rows.scalars()]


@pytest.mark.postgres
def test_advisory_lock_has_one_holder_among_sessions(postgres_url: str, admin: Engine) -> None:
    first, second = AdvisoryLock(lock_engine(postgres_url), "x"), AdvisoryLock(lock_engine(postgres_url), "x")
    try:
        assert first.try_acquire() and first.held
        assert not second.try_acquire() and not second.held
        assert first.try_acquire()  # still held: the holder's session lives
        assert first.key is not None and len(holder_pids(admin, first.key)) == 1
        first.release()
        assert not first.held and holder_pids(admin, first.key) == []
        assert second.try_acquire()
        assert not first.try_acquire()
    finally:
        first.release()
        second.release()


@pytest.mark.postgres
def test_a_dead_holder_session_frees_the_lock(postgres_url: str, admin: Engine) -> None:
    holder, waiting = AdvisoryLock(lock_engine(postgres_url), "x"), AdvisoryLock(lock_engine(postgres_url), "x")
    try:
        assert holder.try_acquire() and not waiting.try_acquire()
        assert holder.key is not None
        (pid,) = holder_pids(admin, holder.key)
        with admin.connect() as conn:  # as when the holder's process dies: its session ends
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
        deadline = time.monotonic() + 5
        while holder_pids(admin, holder.key) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert waiting.try_acquire()
        assert not holder.try_acquire() and not holder.held  # it notices the loss and does not hold it again
        assert not holder.try_acquire()
    finally:
        holder.release()
        waiting.release()


@pytest.mark.postgres
def test_schemas_of_one_database_do_not_share_locks(postgres_url: str, admin: Engine) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql('CREATE SCHEMA IF NOT EXISTS "other_deployment"')
    other = make_url(postgres_url).update_query_dict({"options": "-csearch_path=other_deployment"})
    other_url = other.render_as_string(hide_password=False)
    mine, theirs = AdvisoryLock(lock_engine(postgres_url), "x"), AdvisoryLock(lock_engine(other_url), "x")
    try:
        assert mine.try_acquire() and theirs.try_acquire()
        assert mine.key != theirs.key
    finally:
        mine.release()
        theirs.release()


@pytest.mark.postgres
def test_postgres_locks_are_advisory_and_named_in_pg_stat_activity(postgres_url: str, admin: Engine) -> None:
    with Store.open(postgres_url) as store:
        lock = LockFactory(store)(CRL_PUBLISHING)
        assert isinstance(lock, AdvisoryLock)
        try:
            assert lock.try_acquire() and lock.key is not None
            (pid,) = holder_pids(admin, lock.key)
            with admin.connect() as conn:
                query = text("SELECT application_name FROM pg_stat_activity WHERE pid = :pid")
                name = conn.execute(query, {"pid": pid}).scalar_one()
            assert name == f"scep-server lock {CRL_PUBLISHING} pid {os.getpid()} {socket.gethostname()}"[:63]
        finally:
            lock.release()


def test_an_unreachable_database_holds_no_lock() -> None:
    lock = AdvisoryLock(lock_engine("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2"), "x")
    assert not lock.try_acquire() and not lock.held
    lock.release()


def test_a_lock_that_cannot_be_tried_warns_once_in_a_while(caplog: pytest.LogCaptureFixture) -> None:
    # Nothing listens on port 1: every try fails to connect, as with a pooler refusing sessions.
    engine = create_engine("postgresql+psycopg://scep@127.0.0.1:1/none?connect_timeout=1", poolclass=NullPool)
    lock = AdvisoryLock(engine, CRL_PUBLISHING)
    try:
        assert [lock.try_acquire() for _ in range(3)] == [False, False, False]
    finally:
        engine.dispose()
    warnings = [r for r in caplog.records if "cannot try lock crl-publishing" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"


def test_a_lock_file_root_opens_belongs_to_its_directorys_owner(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "only root can give a file to another user")
    directory = tmp_path / "data"
    directory.mkdir()
    os.chown(directory, 65534, 65534)
    lock = FileLock(directory / "crl-publishing.lock", "crl-publishing")
    assert lock.try_acquire()
    try:
        assert (directory / "crl-publishing.lock").stat().st_uid == 65534
    finally:
        lock.release()


def test_a_lock_file_that_is_a_planted_link_is_never_opened_nor_given_away(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's file")
    victim.chmod(0o600)
    before = victim.stat()
    (tmp_path / "crl-publishing.lock").symlink_to(victim)
    (tmp_path / "ocsp-responder-renewal.lock").hardlink_to(victim)
    for name in ("crl-publishing", "ocsp-responder-renewal"):
        lock = FileLock(tmp_path / f"{name}.lock", name)
        assert not lock.try_acquire() and not lock.held
    after = victim.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
    assert victim.read_text() == "root's file"
