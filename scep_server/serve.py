"""Run the Flask app under gunicorn with buffering gthread workers (see ``worker``), configured from the CLI."""

from __future__ import annotations

import os
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from scep_server.config import ServerConfig
from scep_server.logs import escape_logger_output
from scep_server.web.worker import BufferingThreadWorker

# gunicorn's default format; the request line in it (%(r)s) never carries the query string.
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
_LOGGED_FIELD_CHARS = 256
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
    only the ``operation=`` value. Paths and the logged header fields are clipped.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        escape_logger_output(self.error_log)
        escape_logger_output(self.access_log)

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


def _clip(text: str) -> str:
    return text if len(text) <= _LOGGED_FIELD_CHARS else text[:_LOGGED_FIELD_CHARS] + "..."


def _child_exit(server: object, worker: Any) -> None:
    from scep_server import metrics

    metrics.worker_exited(worker.pid)


def _metrics_dir(config: ServerConfig) -> Path:
    """A fresh directory for the workers' Prometheus samples (stale files would double-count)."""
    path = Path(config.data_dir) / "metrics"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)
    return path


def serve(config: ServerConfig, *, bind: str, workers: int, threads: int) -> None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir(config))
    limits = config.limits
    options = {
        "child_exit": _child_exit,
        "bind": bind,
        "workers": workers,
        "threads": threads,
        "worker_class": BufferingThreadWorker.configured(config),
        "worker_connections": limits.connections_per_worker,
        "timeout": 60,
        "graceful_timeout": 20,
        "keepalive": 5,
        # The worker refuses longer request lines with 414 before parsing; gunicorn's parser gets the
        # same limits. A GET PKIOperation carries the whole message in the query string: certmonger's
        # (3.7-5.7 KB) fit; longer ones must be POSTed.
        "limit_request_line": limits.request_line_bytes,
        "limit_request_fields": limits.header_fields,
        "limit_request_field_size": limits.header_field_bytes,
        "logger_class": ScepLogger,
        "access_log_format": ACCESS_LOG_FORMAT,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": config.log_level.lower(),
        "proc_name": "scep-server",
        # One control socket per instance (gunicornc), not one shared under $HOME.
        "control_socket": str((Path(config.data_dir) / "gunicorn.ctl").resolve()),
    }
    _ScepGunicorn(config, options).run()
