"""Named locks that elect the one process running each singleton background task.

A :class:`Lock` is taken without waiting (:meth:`Lock.try_acquire`) and then held while its holder is
alive: the holder calls ``try_acquire`` again every worker tick, which confirms it still holds the lock
(or reports that it lost it), and everybody else finds it taken. The lease ends with the holder: a
process that dies, however abruptly, frees it, and the next process to try takes over within one
worker interval. The kind follows the store's database, so every process sharing the data shares the
locks:

* SQLite (one host): :class:`FileLock`, ``flock(2)`` on ``<name>.lock`` beside the database file; the
  kernel releases it when the holder's descriptor closes, at exit or on ``kill -9``.
* PostgreSQL (any number of hosts): :class:`AdvisoryLock`, a session-level ``pg_try_advisory_lock`` on
  a connection of its own. The server releases it when that session ends: at once when the holder's
  process dies (the kernel closes its socket), after the TCP keepalive probes (about 25 s, set per
  session) when its host vanishes.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, create_engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from scep_server.files import give_to_owner_of, open_lock_file
from scep_server.store import Store
from scep_server.store.base import describe

log = logging.getLogger(__name__)

# Singleton tasks, one holder each across every process sharing the store.
CRL_PUBLISHING = "crl-publishing"
OCSP_RESPONDER_RENEWAL = "ocsp-responder-renewal"
INTUNE_REVOCATION_SYNC = "intune-revocation-sync"
RA_RENEWAL = "ra-renewal"
# One Intune revocation round at a time, the worker's or a ``scep-server intune sync-revocations`` run.
# Earlier releases locked ``<data_dir>/intune-revocations.lock``: do not run old and new side by side.
INTUNE_REVOCATION_ROUND = "intune-revocations"

WARNING_EVERY = 60.0  # seconds between two warnings that a lock cannot even be tried
_KEY_PREFIX = "scep-server"
_APPLICATION_NAME_LENGTH = 63  # PostgreSQL's NAMEDATALEN - 1
# libpq defaults for the lock's own connection, unless the database URL sets them: a holder whose
# network vanished notices it within tcp_user_timeout instead of hanging on the socket.
_CLIENT_SOCKET_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
    "keepalives_count": 3, "tcp_user_timeout": 15000,
}
# The server side of the same socket: the session, and its locks, end when the holder's host is gone.
_SERVER_KEEPALIVES = (("tcp_keepalives_idle", 10), ("tcp_keepalives_interval", 5), ("tcp_keepalives_count", 3))


class Lock(Protocol):
    """A named lock, taken without waiting and held while its holder lives (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def held(self) -> bool:
        """Whether the last ``try_acquire`` found the lock held by this object."""
        ...

    def try_acquire(self) -> bool:
        """Take the lock if it is free, or confirm it is still held by this object; never blocks.

        False when another process holds it or its backing (file, database) cannot be reached.
        """
        ...

    def release(self) -> None:
        """Let go of the lock (nothing happens when it is not held)."""
        ...


class FileLock:
    """``flock(2)`` on a file: exclusive between every process of one host, this one included."""

    def __init__(self, path: Path, name: str) -> None:
        self._path = path
        self._name = name
        self._fd: int | None = None
        self._mutex = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> Path:
        return self._path

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        with self._mutex:
            if self._fd is not None:
                if self._still_the_file(self._fd):
                    return True
                log.warning("lock file %s was removed or replaced: taking it again", self._path)
                self._close()
            return self._take()

    def release(self) -> None:
        with self._mutex:
            self._close()

    def _take(self) -> bool:
        try:
            fd = open_lock_file(self._path)
        except OSError as exc:
            log.warning("cannot open the lock file %s: %s", self._path, exc.strerror)
            return False
        _give_to_directory_owner(fd, self._path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another descriptor holds it
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _still_the_file(self, fd: int) -> bool:
        # Whoever opens the path now must meet our lock: not so if the file was unlinked meanwhile.
        try:
            current = os.stat(self._path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def _give_to_directory_owner(fd: int, path: Path) -> None:
    """When root opens a lock file (a CLI command run with sudo, say), it gets the owner of the directory
    it lives in (the database's, the server's user): a root-owned 0600 lock file would keep the server
    from ever taking the lock, and so from running that task."""
    try:
        give_to_owner_of(path.parent, fd)
    except OSError as exc:
        log.warning("cannot give the lock file %s its directory's owner: %s", path, exc.strerror)


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock, on a dedicated autocommit connection.

    The key is derived from the lock name and the connection's ``current_schema()``, so replicas
    sharing a schema share the lock and deployments in separate schemas of one database do not meet.
    Holders keep the connection; so do the others, to try again without reconnecting.
    """

    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        self._name = name
        self._conn: Connection | None = None
        self._key: int | None = None
        self._held = False
        self._mutex = threading.Lock()
        self._last_warning = -WARNING_EVERY

    @property
    def name(self) -> str:
        return self._name

    @property
    def held(self) -> bool:
        return self._held

    @property
    def key(self) -> int | None:
        """The advisory lock key, once connected."""
        return self._key

    def try_acquire(self) -> bool:
        with self._mutex:
            try:
                return self._try()
            except SQLAlchemyError as exc:
                if self._held:
                    log.warning("lost lock %s: its database session failed (%s)", self._name, describe(exc))
                elif time.monotonic() - self._last_warning >= WARNING_EVERY:
                    # Once in a while, not every try: a pooler in transaction mode or max_connections
                    # keeps every try failing, and then the singleton tasks run nowhere.
                    self._last_warning = time.monotonic()
                    log.warning("cannot try lock %s (its tasks run nowhere until this passes): %s",
                                self._name, describe(exc))
                self._disconnect()
                return False

    def release(self) -> None:
        with self._mutex:
            if self._conn is not None and self._held and self._key is not None:
                try:
                    self._conn.execute(select(func.pg_advisory_unlock(self._key)))
                except SQLAlchemyError as exc:  # the session ends below, and the lock with it
                    log.debug("unlocking %s failed: %s", self._name, describe(exc))
            self._disconnect()

    def _try(self) -> bool:
        if self._conn is not None and self._held:
            self._conn.execute(select(1)).scalar_one()  # the session lives, so its lock does
            return True
        if self._conn is None:
            self._conn, self._key = self._connect()
        self._held = bool(self._conn.execute(select(func.pg_try_advisory_lock(self._key))).scalar_one())
        return self._held

    def _connect(self) -> tuple[Connection, int]:
        conn = self._engine.connect()
        try:
            for setting, value in _SERVER_KEEPALIVES:
                conn.exec_driver_sql(f"SET {setting} = {value}")
            namespace = conn.execute(select(func.current_schema())).scalar_one_or_none() or ""
        except SQLAlchemyError:
            conn.close()
            raise
        return conn, advisory_key(self._name, namespace)

    def _disconnect(self) -> None:
        self._held = False
        if self._conn is not None:
            try:
                self._conn.close()
            except SQLAlchemyError as exc:
                log.debug("closing the connection of lock %s: %s", self._name, describe(exc))
            self._conn = None


def advisory_key(name: str, namespace: str) -> int:
    """The signed 64-bit ``pg_try_advisory_lock`` key of lock ``name`` in schema ``namespace``."""
    digest = hashlib.sha256(f"{_KEY_PREFIX}/{namespace}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class LockFactory:
    """Makes the locks of one store: file locks for SQLite, advisory locks for PostgreSQL."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._dialect = store.engine.dialect.name
        if self._dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"no lock implementation for {self._dialect} databases")
        self._directory: Path | None = None

    def __call__(self, name: str) -> Lock:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"{name!r} is not a lock name")
        if self._dialect == "postgresql":
            return AdvisoryLock(_lock_engine(self._store.engine, name), name)
        return FileLock(self._lock_directory() / f"{name}.lock", name)

    def _lock_directory(self) -> Path:
        if self._directory is None:
            database = self._store.engine.url.database
            path = (database or "").removeprefix("file:").split("?", 1)[0]
            if path in ("", ":memory:"):
                # Nothing outside this process sees its database, so nothing else needs its locks.
                self._directory = Path(tempfile.mkdtemp(prefix="scep-server-locks-"))
            else:
                self._directory = Path(path).resolve().parent
        return self._directory


def _lock_engine(store_engine: Engine, name: str) -> Engine:
    url = store_engine.url
    connect_args = {key: value for key, value in _CLIENT_SOCKET_DEFAULTS.items() if key not in url.query}
    if "application_name" not in url.query:
        # Shown in pg_stat_activity: which process of which host holds which lock.
        label = f"scep-server lock {name} pid {os.getpid()} {socket.gethostname()}"
        connect_args["application_name"] = label[:_APPLICATION_NAME_LENGTH]
    return create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=connect_args)
