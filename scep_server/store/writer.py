"""Write transactions of one engine, and on SQLite the turn each writer waits for.

SQLite admits one writer at a time and makes the others wait in its busy handler, which sleeps in
growing steps (up to 100 ms) and polls: under load a writer that has waited a while keeps sleeping
while newer ones get in, so some requests wait seconds and then fail on the busy timeout. Writers
therefore take turns before ``BEGIN IMMEDIATE``: the threads of a process on a lock, which wakes the
next one as soon as the previous commits, and the processes on a file lock beside the database,
tried every millisecond. A turn not had within the busy timeout is ``StoreUnavailable``, as SQLite's
own timeout is. PostgreSQL needs none of this: its writers wait on the rows they touch.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine

from scep_server.errors import StoreUnavailable

# Execution option of the writer engine; on SQLite it makes the transaction start BEGIN IMMEDIATE.
WRITE_OPTION = "scep_server_write"
TURN_TIMEOUT_S = 5.0  # as SQLite's busy timeout
FILE_LOCK_POLL_S = 0.001


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
    """One writer at a time among the threads of this process and the processes sharing the file."""

    def __init__(self, lock_path: Path | None, timeout: float = TURN_TIMEOUT_S) -> None:
        self._threads = threading.Lock()
        self._lock_path = lock_path
        self._timeout = timeout
        self._fd: int | None = None
        self._pid = 0

    @contextmanager
    def taken(self) -> Iterator[None]:
        deadline = time.monotonic() + self._timeout
        if not self._threads.acquire(timeout=self._timeout):
            raise StoreUnavailable(f"no write turn within {self._timeout:g} s: the database is busy")
        try:
            self._take_file(deadline)
            try:
                yield
            finally:
                self._release_file()
        finally:
            self._threads.release()

    def _take_file(self, deadline: float) -> None:
        if self._lock_path is None:
            return
        fd = self._file()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreUnavailable(
                        f"no write turn within {self._timeout:g} s: another process holds the database"
                    ) from None
                time.sleep(FILE_LOCK_POLL_S)

    def _release_file(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _file(self) -> int:
        # Opened once per process (under the thread lock); a forked worker opens its own, as flock
        # locks belong to the open file, which a fork would share with the parent.
        if self._fd is None or self._pid != os.getpid():
            assert self._lock_path is not None
            self._fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd


_TURNS: weakref.WeakKeyDictionary[Engine, WriterTurn] = weakref.WeakKeyDictionary()
_TURNS_LOCK = threading.Lock()


def _turn_of(engine: Engine) -> WriterTurn | None:
    """The turn shared by every writer of ``engine``; None unless it is SQLite."""
    if engine.dialect.name != "sqlite":
        return None
    with _TURNS_LOCK:
        turn = _TURNS.get(engine)
        if turn is None:
            turn = _TURNS[engine] = WriterTurn(_lock_file(engine))
        return turn


def _lock_file(engine: Engine) -> Path | None:
    """``<database>.write-lock`` beside a database file; None for in-memory and URI databases, which
    one process alone can open."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:") or engine.url.query.get("uri"):
        return None
    return Path(database).with_name(f"{Path(database).name}.write-lock")
