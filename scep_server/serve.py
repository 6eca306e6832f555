"""Run the Flask app under gunicorn with buffering gthread workers (see ``worker``), configured from the CLI.

Before gunicorn starts, :class:`MetricsDirectory` gives this server instance its own directory for the
workers' Prometheus samples, and gunicorn's error and access logs get the configured ``log_format``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, cast

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from scep_server import logs, metrics
from scep_server.config import ServerConfig
from scep_server.files import make_private_dir
from scep_server.web.request_ids import ENVIRON_KEY
from scep_server.web.worker import BufferingThreadWorker

log = logging.getLogger("scep_server.serve")

# gunicorn's default format; the request line in it (%(r)s) never carries the query string.
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
JSON_ACCESS_MESSAGE = '"%(r)s" %(s)s'  # the rest of the line is in the JSON object's fields
ACCESS_FIELDS = ("remote_addr", "method", "path", "status", "bytes", "duration_ms", "user_agent", "referer")
_LOGGED_FIELD_CHARS = 256
# How long a stopping worker may finish its requests; a supervisor must wait longer before it kills.
GRACEFUL_TIMEOUT_SECONDS = 20
_OPERATION = re.compile(r"(?:^|&)operation=([^&]{0,64})")


class _ScepGunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, config: ServerConfig, options: dict[str, Any]) -> None:
        self._config = config
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            if key in self.cfg.settings:  # control_socket exists only in gunicorn >= 25.1
                self.cfg.set(key, value)

    def load(self) -> Flask:
        from scep_server.web import create_app

        # Built in each worker after the fork: database connections must not cross processes.
        return create_app(self._config)


class ScepLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, with control characters escaped and without query strings in the access log.

    A GET PKIOperation carries the whole SCEP message in its query string: the access log keeps
    only the ``operation=`` value. Paths and the logged header fields are clipped. With ``log_format``
    json, both logs are JSON lines (:class:`scep_server.logs.JsonFormatter`), an access line with the
    request's fields (``ACCESS_FIELDS``) and its request id.
    """

    log_format: ClassVar[str] = "text"

    @classmethod
    def configured(cls, log_format: str) -> type[ScepLogger]:
        """A subclass writing ``log_format``: gunicorn instantiates the logger class itself."""
        logs.formatter_for(log_format)  # refuses an unknown format here rather than in gunicorn
        return cast("type[ScepLogger]", type(cls.__name__, (cls,), {"log_format": log_format}))

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            logs.use_format(handler, self.log_format)
        for handler in self.access_log.handlers:
            logs.use_format(handler, self.log_format)
            if isinstance(handler.formatter, logs.JsonFormatter):
                handler.setFormatter(logs.JsonFormatter(ACCESS_FIELDS))

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if self.log_format != "json":
            super().access(resp, req, environ, request_time)
        elif self.access_log_enabled:
            atoms = self.atoms(resp, req, environ, request_time)
            self.access_log.info(JSON_ACCESS_MESSAGE, atoms, extra=_access_fields(atoms, environ, request_time))

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> dict[str, Any]:
        """The fields ``ACCESS_LOG_FORMAT`` names, and only those: gunicorn's own atoms add every request
        header, response header and environ variable, which costs more than answering a cached OCSP request."""
        status = resp.status
        sent = getattr(resp, "sent", None)
        target = logged_target(str(environ.get("RAW_URI", "")), str(environ.get("QUERY_STRING", "")))
        return {
            "h": environ.get("REMOTE_ADDR", "-"),
            "l": "-",
            "u": _clip(self._get_user(environ) or "-"),
            "t": self.now(),
            "r": f"{environ.get('REQUEST_METHOD', '-')} {target} {environ.get('SERVER_PROTOCOL', '-')}",
            "s": status.split(None, 1)[0] if isinstance(status, str) else status,
            "b": "-" if sent is None else str(sent),
            "f": _clip(str(environ.get("HTTP_REFERER", "-"))),
            "a": _clip(str(environ.get("HTTP_USER_AGENT", "-"))),
        }


def logged_target(raw_uri: str, query_string: str) -> str:
    """The request target as logged: the path, clipped, and of the query only ``operation=``."""
    path = _clip(raw_uri.partition("?")[0])
    operation = _OPERATION.search(query_string)
    return f"{path}?operation={operation.group(1)}" if operation else path


def _access_fields(atoms: dict[str, Any], environ: dict[str, Any], request_time: timedelta) -> dict[str, Any]:
    status = str(atoms["s"])
    return {
        "request_id": environ.get(ENVIRON_KEY),
        "remote_addr": atoms["h"],
        "method": environ.get("REQUEST_METHOD", "-"),
        "path": logged_target(str(environ.get("RAW_URI", "")), str(environ.get("QUERY_STRING", ""))),
        "status": int(status) if status.isdigit() else status,
        "bytes": int(atoms["b"]) if atoms["b"].isdigit() else None,
        "duration_ms": round(request_time.total_seconds() * 1000, 3),
        "user_agent": atoms["a"],
        "referer": atoms["f"],
    }


def _clip(text: str) -> str:
    return text if len(text) <= _LOGGED_FIELD_CHARS else text[:_LOGGED_FIELD_CHARS] + "..."


def _child_exit(server: object, worker: Any) -> None:
    metrics.worker_exited(worker.pid)


class MetricsDirectory:
    """This server instance's directory for its workers' Prometheus samples: ``<data_dir>/metrics/<id>/``.

    Replicas may share a data_dir, so each instance has a directory of its own, named by a new id, and
    holds an exclusive lock on ``<id>.lock`` beside it for as long as it runs (the kernel lets the lock go
    with the process, however it ends). At start, the directories whose lock nobody holds are removed:
    their instances have ended. A running instance's directory is never touched. The lock file is locked
    before it gets its name and the directory is made after it, so no one ever sees a live instance's
    directory without a held lock. The owner removes its own directory when it stops.
    """

    def __init__(self, root: Path, instance: str, lock_fd: int) -> None:
        self.root = root
        self.instance = instance
        self.path = root / instance
        self._lock_fd = lock_fd
        self._owner = os.getpid()

    @classmethod
    def create(cls, data_dir: Path) -> MetricsDirectory:
        root = data_dir / METRICS_DIR
        make_private_dir(root)
        remove_stale_metrics(root)
        instance = f"{os.getpid()}-{secrets.token_hex(4)}"
        lock_fd = _take_lock(root, instance)
        (root / instance).mkdir(mode=0o700)
        return cls(root, instance, lock_fd)

    def remove(self) -> None:
        """Only in the process that created it: the gunicorn workers forked from it run this on their way
        out too (their SystemExit unwinds the master's stack), while the others still write there."""
        if os.getpid() != self._owner:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        (self.root / f"{self.instance}{_LOCK_SUFFIX}").unlink(missing_ok=True)
        os.close(self._lock_fd)


METRICS_DIR = "metrics"
_LOCK_SUFFIX = ".lock"
_LOCKING_SUFFIX = ".locking"  # a lock file before it is named: never a stale instance's
_LOCKING_GRACE_SECONDS = 60.0  # an unnamed lock file younger than this may still be on its way


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False


def _take_lock(root: Path, instance: str) -> int:
    fd, locking = tempfile.mkstemp(dir=root, prefix=".", suffix=_LOCKING_SUFFIX)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(locking, root / f"{instance}{_LOCK_SUFFIX}")
    return fd


def remove_stale_metrics(root: Path) -> list[str]:
    """Remove the metrics directories (and lock files) of instances that have ended; their ids."""
    removed = []
    for lock_path in sorted(root.glob(f"*{_LOCK_SUFFIX}")):
        instance = lock_path.name.removesuffix(_LOCK_SUFFIX)
        with _unheld(lock_path) as stale:
            if stale:
                shutil.rmtree(root / instance, ignore_errors=True)
                lock_path.unlink(missing_ok=True)
                removed.append(instance)
    for entry in root.iterdir():
        if entry.is_dir() and not entry.with_name(entry.name + _LOCK_SUFFIX).exists():
            shutil.rmtree(entry, ignore_errors=True)  # its lock is gone, so is its instance
            removed.append(entry.name)
        elif entry.name.endswith(_LOCKING_SUFFIX) and _older_than(entry, _LOCKING_GRACE_SECONDS):
            # A young one may be another instance's between its creation and its flock: left alone.
            with _unheld(entry) as stale:
                if stale:
                    entry.unlink(missing_ok=True)
    if removed:
        log.info("removed the metrics of ended server instances: %s", ", ".join(removed))
    return removed


@contextmanager
def _unheld(path: Path) -> Iterator[bool]:
    """True inside the block when no process holds ``path``'s lock (it is then held by this one)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)


def serve(config: ServerConfig, *, bind: str, workers: int, threads: int) -> None:
    """Run gunicorn in the foreground until it stops; this instance's metrics directory goes with it."""
    for handler in logging.getLogger().handlers:  # the application's records, in the configured format
        logs.use_format(handler, config.log_format)
    directory = MetricsDirectory.create(Path(config.data_dir))
    try:
        metrics.enable_multiprocess(str(directory.path))
        _ScepGunicorn(config, _options(config, bind=bind, workers=workers, threads=threads)).run()
    finally:
        directory.remove()


def _options(config: ServerConfig, *, bind: str, workers: int, threads: int) -> dict[str, Any]:
    limits = config.limits
    options = {
        "child_exit": _child_exit,
        "bind": bind,
        "workers": workers,
        "threads": threads,
        "worker_class": BufferingThreadWorker.configured(config),
        "worker_connections": limits.connections_per_worker,
        "timeout": 60,
        "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
        "keepalive": 5,
        # The worker refuses longer request lines with 414 before parsing; gunicorn's parser gets the
        # same limits. A GET PKIOperation carries the whole message in the query string: certmonger's
        # (3.7-5.7 KB) fit; longer ones must be POSTed.
        "limit_request_line": limits.request_line_bytes,
        "limit_request_fields": limits.header_fields,
        "limit_request_field_size": limits.header_field_bytes,
        "logger_class": ScepLogger.configured(config.log_format),
        "access_log_format": ACCESS_LOG_FORMAT,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": config.log_level.lower(),
        "proc_name": "scep-server",
        # One control socket per instance (gunicornc), not one shared under $HOME.
        "control_socket": str((Path(config.data_dir) / "gunicorn.ctl").resolve()),
    }
    return options
