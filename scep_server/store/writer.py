"""Write transactions of one engine, and on SQLite the turn each writer waits for.

SQLite admits one writer at a time and makes the others wait in its busy handler, which sleeps in
growing steps (up to 100 ms) and polls: under load a writer that has waited a while keeps sleeping
while newer ones get in, so some requests wait seconds and then fail on the busy timeout. Writers
therefore take turns before ``BEGIN IMMEDIATE``: the threads of a process on a lock, which wakes the
next one as soon as the previous commits, and the processes on a file lock beside the database (see
``TurnFile``). A turn not had within the busy timeout is ``StoreUnavailable``, as SQLite's own timeout
is. PostgreSQL needs none of this: its writers wait on the rows they touch.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine

from scep_server.errors import StoreUnavailable
from scep_server.files import give_to_owner_of, open_lock_file

log = logging.getLogger(__name__)

# Execution option of the writer engine; on SQLite it makes the transaction start BEGIN IMMEDIATE.
WRITE_OPTION = "scep_server_write"
TURN_TIMEOUT_S = 5.0  # as SQLite's busy timeout
LOCK_SUFFIX = ".write-lock"


class Writer:
    """Opens the engine's write transactions (``begin``), taking a writer's turn first on SQLite."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine.execution_options(**{WRITE_OPTION: True})
        self._turn = _turn_of(engine)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back when it raises."""
        if self._turn is None:
            with self._engine.begin() as conn:
                yield conn
            return
        with self._turn.taken(), self._engine.begin() as conn:
            yield conn

    def connect(self) -> Connection:
        """A connection whose transactions write (migrations manage their own)."""
        return self._engine.connect()


class WriterTurn:
    """One writer at a time among the threads of this process and the processes sharing the file.

    ``database``: the file the lock file belongs to; a lock file root opens is given its owner.
    """

    def __init__(
        self, lock_path: Path | None, timeout: float = TURN_TIMEOUT_S, *, database: Path | None = None
    ) -> None:
        self._lock_path = lock_path
        self._timeout = timeout
        self._threads = threading.Lock()
        self._file = None if lock_path is None else TurnFile(lock_path, database)
        if self._file is not None:
            weakref.finalize(self, self._file.close)
        _LIVE_TURNS.add(self)

    @contextmanager
    def taken(self) -> Iterator[None]:
        deadline = time.monotonic() + self._timeout
        if not self._threads.acquire(timeout=self._timeout):
            raise StoreUnavailable(f"no write turn within {self._timeout:g} s: the database is busy")
        try:
            if self._file is None:
                yield
                return
            self._file.acquire(deadline, self._timeout)
            try:
                yield
            finally:
                self._file.release()
        finally:
            self._threads.release()

    def close(self) -> None:
        """Close the lock file (taken again by the next turn); call it when no writer is in its turn."""
        if self._file is not None:
            self._file.close()

    def reset_after_fork(self) -> None:
        """In a forked child: a thread of the parent may have held the locks, and is not here."""
        self._threads = threading.Lock()
        if self._file is not None:
            self._file.after_fork_in_child()


class TurnFile:
    """The file lock (``flock``) that orders the writers of the processes sharing a database.

    Taking it waits in a blocking ``flock``, so the kernel wakes a waiting process the moment the holder
    lets go: polling a non-blocking ``flock`` loses every race to the holder's next thread, which asks
    straight after the release, and starves the polling processes under load (exponential backoff makes
    that worse, as SQLite's busy handler shows). A blocking ``flock`` has no timeout, and an alarm signal
    can only interrupt the main thread, not the request threads; so the blocking call runs in a waiter
    thread, one at most per process, while the writer whose turn it is waits for it until its deadline.
    A writer that gives up leaves the waiter behind: it hands the lock to this process's next writer if
    one waits by then, or lets go of it at once.

    The file is opened once per process: after a fork the child closes the descriptor it inherited
    (flock locks belong to the open file, which parent and child would share) and opens its own.
    """

    def __init__(self, path: Path, database: Path | None) -> None:
        self._path = path
        self._database = database
        self._reset()

    def _reset(self) -> None:
        self._state = threading.Condition(threading.Lock())
        self._fd: int | None = None
        self._waiting = False  # a waiter thread is in its blocking flock
        self._wanted = False  # a writer waits for what the waiter gets
        self._failure: OSError | None = None  # why the waiter's flock failed, for the writer that waits
        self._close_when_done = False

    def acquire(self, deadline: float, timeout: float) -> None:
        """Take the lock by ``deadline``, else ``StoreUnavailable``; called by one thread at a time."""
        with self._state:
            self._close_when_done = False  # in use again
            if not self._waiting and self._try_lock(self._open()):
                return
            self._wanted = True
            try:
                got = self._state.wait_for(lambda: not self._waiting, timeout=max(0.0, deadline - time.monotonic()))
            finally:
                self._wanted = False
            if not got:
                raise StoreUnavailable(f"no write turn within {timeout:g} s: another process holds the database")
            failure, self._failure = self._failure, None
            if failure is not None:
                raise _unavailable("cannot lock", self._path, failure)

    def release(self) -> None:
        with self._state:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._state:
            if self._waiting:
                self._close_when_done = True
            else:
                self._close_fd()

    def after_fork_in_child(self) -> None:
        fd = self._fd
        self._reset()
        if fd is not None:
            # Only the child's descriptor: the parent's lock stays, as long as the parent's own is open.
            _close_quietly(fd)

    def _try_lock(self, fd: int) -> bool:
        """Whether the lock was free and is now held; if not, a waiter thread is waiting for it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        except OSError as exc:
            raise _unavailable("cannot lock", self._path, exc) from exc
        waiter = threading.Thread(target=self._wait_for_lock, args=(fd,), name="sqlite-write-turn", daemon=True)
        try:
            waiter.start()
        except RuntimeError as exc:  # no thread to be had: the process is at its limit, which may pass
            raise StoreUnavailable(f"cannot wait for the writers' lock file {self._path}: {exc}") from exc
        self._waiting = True
        return False

    def _wait_for_lock(self, fd: int) -> None:
        failure: OSError | None = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            failure = exc
        with self._state:
            self._waiting = False
            if self._wanted:
                self._failure = failure
            elif failure is None:
                fcntl.flock(fd, fcntl.LOCK_UN)  # its writer gave up: the next writer of any process goes
            if self._close_when_done:
                self._close_fd()
            self._state.notify_all()

    def _open(self) -> int:
        if self._fd is None:
            try:
                fd = open_lock_file(self._path)
            except OSError as exc:
                raise _unavailable("cannot open", self._path, exc) from exc
            _give_to_owner_of(self._database, fd, self._path)
            self._fd = fd
        return self._fd

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        self._close_when_done = False
        if fd is not None:
            _close_quietly(fd)


def _give_to_owner_of(database: Path | None, fd: int, path: Path) -> None:
    """As SQLite does with its -wal and -shm files: when root opens the lock file (a command run with
    sudo, say), it gets the database file's owner, so the server's own user can still take turns."""
    if database is None:
        return
    try:
        give_to_owner_of(database, fd)  # also mends a lock file an earlier release left root's
    except FileNotFoundError:
        return  # no database yet: this process creates it, and owns both
    except OSError as exc:
        log.warning("store: cannot give %s the owner of %s: %s; other users cannot write the database",
                    path, database, exc.strerror)


def _unavailable(action: str, path: Path, exc: OSError) -> StoreUnavailable:
    return StoreUnavailable(
        f"{action} the writers' lock file {path}: {exc.strerror or exc}; it must be readable and writable "
        "by the user the server runs as, like the database file"
    )


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError as exc:  # nothing left to release: the descriptor is gone either way
        log.debug("store: closing a lock file descriptor failed: %s", exc.strerror)


_TURNS: weakref.WeakKeyDictionary[Engine, WriterTurn] = weakref.WeakKeyDictionary()
_TURNS_LOCK = threading.Lock()
_LIVE_TURNS: weakref.WeakSet[WriterTurn] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _TURNS_LOCK
    _TURNS_LOCK = threading.Lock()
    for turn in list(_LIVE_TURNS):
        turn.reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _turn_of(engine: Engine) -> WriterTurn | None:
    """The turn shared by every writer of ``engine``; None unless it is SQLite."""
    if engine.dialect.name != "sqlite":
        return None
    with _TURNS_LOCK:
        turn = _TURNS.get(engine)
        if turn is None:
            turn = _TURNS[engine] = WriterTurn(_lock_file(engine), database=_database_file(engine))
        return turn


def close_turn(engine: Engine) -> None:
    """Close the lock file of ``engine``'s turn, if it has one (when the store closes)."""
    with _TURNS_LOCK:
        turn = _TURNS.get(engine)
    if turn is not None:
        turn.close()


def _lock_file(engine: Engine) -> Path | None:
    """``<database>.write-lock`` beside a database file. None for an in-memory database, which one
    process alone can see, and for a ``file:`` URI database (``sqlite:///file:...``, ``?uri=true``), whose
    path is not parsed here: the threads of this process still take turns, but the processes sharing
    such a database get no file lock and wait for each other in SQLite's busy handler instead."""
    database = _database_file(engine)
    return None if database is None else database.with_name(f"{database.name}{LOCK_SUFFIX}")


def _database_file(engine: Engine) -> Path | None:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:") or engine.url.query.get("uri"):
        return None
    return Path(database)
