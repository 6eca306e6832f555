"""SQLite writers take turns before BEGIN IMMEDIATE: threads on a lock, processes on a file lock beside
the database. A turn released soon lets the next writer in; one held past the timeout is
StoreUnavailable; PostgreSQL writers take no turn."""

from __future__ import annotations

import errno
import fcntl
import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from scep_server.errors import StoreUnavailable
from scep_server.store import Store
from scep_server.store.writer import Writer, WriterTurn

HOLD_FLOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
open(sys.argv[1] + ".released", "w").close()  # written while still holding the lock
"""


def _store(tmp_path: Path) -> Store:
    store = Store.open(f"sqlite:///{tmp_path / 'w.db'}")
    store.migrate()
    return store


def test_a_writer_waits_for_the_turn_of_another_thread_and_then_writes(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        writer, held, order = Writer(store.engine), threading.Event(), []

        def first() -> None:
            with writer.begin() as conn:
                conn.execute(text("SELECT 1"))
                held.set()
                time.sleep(0.3)
                order.append("first")

        thread = threading.Thread(target=first)
        thread.start()
        held.wait(5)
        with writer.begin() as conn:
            order.append("second")
            conn.execute(text("SELECT 1"))
        thread.join()
        assert order == ["first", "second"]


def test_every_repository_of_a_store_shares_one_turn(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        assert Writer(store.engine)._turn is Writer(store.engine)._turn is not None


def test_a_turn_held_by_another_thread_past_the_timeout_is_store_unavailable() -> None:
    turn, held, done = WriterTurn(None, timeout=0.2), threading.Event(), threading.Event()

    def holder() -> None:
        with turn.taken():
            held.set()
            done.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    try:
        with pytest.raises(StoreUnavailable, match="no write turn"), turn.taken():
            pass
    finally:
        done.set()
        thread.join()
    with turn.taken():  # released: the next one gets it
        pass


def _holding_process(lock: Path, seconds: float) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", HOLD_FLOCK, str(lock), str(seconds)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_turn_held_by_another_process_past_the_timeout_is_store_unavailable(tmp_path: Path) -> None:
    lock = tmp_path / "db.write-lock"
    proc = _holding_process(lock, 30)
    try:
        with pytest.raises(StoreUnavailable, match="another process"), WriterTurn(lock, timeout=0.3).taken():
            pass
    finally:
        proc.kill()
        proc.wait()
    with WriterTurn(lock, timeout=5).taken():  # the holder died: its lock went with it
        pass


def test_a_turn_another_process_releases_soon_is_taken(tmp_path: Path) -> None:
    lock = tmp_path / "db.write-lock"
    proc = _holding_process(lock, 0.3)
    try:
        with WriterTurn(lock, timeout=10).taken():
            assert (tmp_path / "db.write-lock.released").exists()  # it got in only once the holder let go
    finally:
        proc.wait()
    assert proc.returncode == 0


def test_the_lock_file_lies_beside_the_database_owner_only(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        store.record_operation(profile="default", operation="PKIOperation", message_type=None,
                               transaction_id=None, outcome="SUCCESS", detail=None, requester_ip=None)
        lock = tmp_path / "w.db.write-lock"
        assert lock.exists() and lock.stat().st_mode & 0o077 == 0


def test_in_memory_and_postgresql_engines_need_no_file() -> None:
    assert Writer(create_engine("sqlite://"))._turn is not None
    assert Writer(create_engine("sqlite://"))._turn._lock_path is None  # type: ignore[union-attr]
    assert Writer(create_engine("postgresql+psycopg://u@127.0.0.1/none"))._turn is None


TRY_FLOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("got")
        break
    except BlockingIOError:
        if time.monotonic() > deadline:
            print("busy")
            break
        time.sleep(0.01)
"""


def _descriptors_of(path: Path) -> int:
    """How many descriptors of this process refer to ``path``."""
    count = 0
    for entry in Path("/proc/self/fd").iterdir():
        try:
            count += Path(os.readlink(entry)) == path
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return count


def test_a_lock_file_that_cannot_be_opened_is_store_unavailable(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        (tmp_path / "w.db.write-lock").mkdir()  # what a stray `mkdir` or a wrong volume mount leaves
        with pytest.raises(StoreUnavailable, match=r"cannot open the writers' lock file .*w\.db\.write-lock"):
            store.record_operation(profile="default", operation="PKIOperation", message_type=None,
                                   transaction_id=None, outcome="SUCCESS", detail=None, requester_ip=None)


def test_a_lock_file_in_a_missing_directory_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="cannot open the writers' lock file"):
        with WriterTurn(tmp_path / "gone" / "db.write-lock", timeout=1).taken():
            pass


def test_a_file_lock_the_system_refuses_is_store_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(StoreUnavailable, match="cannot lock the writers' lock file"):
        with WriterTurn(tmp_path / "db.write-lock", timeout=1).taken():
            pass


def test_a_lock_file_root_opens_gets_the_owner_of_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "w.db"
    database.touch()
    given: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "fchown", lambda fd, uid, gid: given.append((uid, gid)))
    with WriterTurn(tmp_path / "w.db.write-lock", database=database).taken():
        pass
    owner = database.stat()
    assert given == [(owner.st_uid, owner.st_gid)]


def test_a_lock_file_opened_by_its_owner_keeps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    database = tmp_path / "w.db"
    database.touch()
    given: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(os, "fchown", lambda fd, uid, gid: given.append((uid, gid)))
    with WriterTurn(tmp_path / "w.db.write-lock", database=database).taken():
        pass
    assert given == []


def test_a_writer_that_gives_up_leaves_the_lock_to_its_next_writer(tmp_path: Path) -> None:
    lock = tmp_path / "db.write-lock"
    turn = WriterTurn(lock, timeout=0.2)
    proc = _holding_process(lock, 0.6)
    try:
        with pytest.raises(StoreUnavailable, match="another process"), turn.taken():
            pass
        patient = WriterTurn(lock, timeout=10)
        patient._file = turn._file  # the same process's next writer, with a longer deadline
        with patient.taken():
            assert (tmp_path / "db.write-lock.released").exists()
    finally:
        proc.wait()


def test_a_writer_that_gives_up_lets_other_processes_in_once_the_holder_is_done(tmp_path: Path) -> None:
    lock = tmp_path / "db.write-lock"
    proc = _holding_process(lock, 0.4)
    try:
        with pytest.raises(StoreUnavailable, match="another process"), WriterTurn(lock, timeout=0.1).taken():
            pass
    finally:
        proc.wait()
    other = subprocess.run([sys.executable, "-c", TRY_FLOCK, str(lock), "5"], capture_output=True, text=True,
                           check=True)
    assert other.stdout.strip() == "got"


def test_a_closed_turn_keeps_no_descriptor_and_opens_the_file_again_when_taken(tmp_path: Path) -> None:
    lock = tmp_path / "db.write-lock"
    turn = WriterTurn(lock)
    with turn.taken():
        assert _descriptors_of(lock) == 1
    turn.close()
    assert _descriptors_of(lock) == 0
    with turn.taken():
        assert _descriptors_of(lock) == 1


def test_a_turn_no_longer_used_closes_its_file(tmp_path: Path) -> None:
    lock = tmp_path / "db.write-lock"
    turn = WriterTurn(lock)
    with turn.taken():
        pass
    del turn
    gc.collect()
    assert _descriptors_of(lock) == 0


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_waits_for_the_turn_its_parent_holds_on_its_own_descriptor(tmp_path: Path) -> None:
    lock = tmp_path / "db.write-lock"
    turn = WriterTurn(lock, timeout=0.3)
    with turn.taken():
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 when it behaves, else which check failed
            status = 1
            try:
                if _descriptors_of(lock) == 0:
                    status = 2
                    with turn.taken():
                        pass
            except StoreUnavailable as exc:
                status = 0 if "another process" in str(exc) else 3
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_write_lock_that_is_a_planted_link_is_refused_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's file")
    victim.chmod(0o600)
    before = victim.stat()
    lock = tmp_path / "scep-server.db.write-lock"
    lock.symlink_to(victim)
    turn = WriterTurn(lock, database=tmp_path / "scep-server.db")
    with pytest.raises(StoreUnavailable, match="write-lock"), turn.taken():
        pass
    after = victim.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
