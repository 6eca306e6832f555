"""Run the Flask app under gunicorn with gthread workers, configured from the CLI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from ..config import ServerConfig


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
        from . import create_app

        # Built in each worker after the fork: database connections must not cross processes.
        return create_app(self._config)


def _child_exit(server: object, worker: Any) -> None:
    from .. import metrics

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
    options = {
        "child_exit": _child_exit,
        "bind": bind,
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 60,
        "graceful_timeout": 20,
        "keepalive": 5,
        # GET PKIOperation carries the whole message in the query string: the view enforces
        # max_body_bytes on it instead of gunicorn's 4 KiB request-line limit.
        "limit_request_line": 0,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": config.log_level.lower(),
        "proc_name": "scep-server",
        # One control socket per instance (gunicornc), not one shared under $HOME.
        "control_socket": str((Path(config.data_dir) / "gunicorn.ctl").resolve()),
    }
    _ScepGunicorn(config, options).run()
