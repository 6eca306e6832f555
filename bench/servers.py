"""The processes a section runs against: our server, micromdm's scepserver, the Intune emulator, and a
private PostgreSQL database; plus reading back what the store holds.

Every child runs in a process group of its own (the launchers of ``tests/support``) and is stopped with
it; ``kill_hard`` ends a group with SIGKILL, which is how the durability check ends our server.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from tests.support.processes import HOST, HarnessError, client_env, spawn, stop_group, tail
from tests.support.servers import ScepServerProcess

CHALLENGE = "bench-secret"
ADMIN_TOKEN = "bench-admin-token-" + secrets.token_hex(8)
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
EMULATOR_BANNER = re.compile(r"Intune emulator listening on (https://127\.0\.0\.1:(\d+))")


class BenchServer(ScepServerProcess):
    """Our server; ``workers``/``threads`` None leaves ``serve``'s own defaults (what a user gets)."""

    def __init__(self, tmp: Path, config: dict[str, Any], workers: int | None, threads: int | None, *,
                 init: bool = True, env: Mapping[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(tmp, yaml.safe_dump(config, sort_keys=False), startup_timeout=120.0, env=env)
        self.bench_workers, self.bench_threads, self.init = workers, threads, init

    def _prepare(self) -> None:
        if self.init:
            super()._prepare()
        else:  # a restart on the CA and store of an earlier run in the same directory
            self.config_path.write_text(self.config_yaml, encoding="utf-8")

    def _serve_argv(self, port: int) -> list[str]:
        argv = [*self.server_cmd, "--config", str(self.config_path), "serve", "--bind", f"{HOST}:{port}"]
        if self.bench_workers is not None:
            argv += ["--workers", str(self.bench_workers)]
        if self.bench_threads is not None:
            argv += ["--threads", str(self.bench_threads)]
        return argv

    @property
    def pgid(self) -> int:
        if self.proc is None:
            raise HarnessError("the server is not running")
        return self.proc.pid


def our_config(data_dir: Path, *, database_url: str | None = None, profiles: dict[str, Any] | None = None,
               intune: dict[str, Any] | None = None, keys: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """RSA-2048 CA (as micromdm's), a static ``default`` profile, the admin API on; dev keys (no passphrase
    prompt) in files unless ``keys`` (``ca.keys``) names another backend, everything else the server's
    defaults: SQLite's durable settings unless ``database_url``."""
    config: dict[str, Any] = {
        "dev": True,
        "data_dir": str(data_dir),
        "admin_token": {"value": ADMIN_TOKEN},
        "ca": {"name": "bench-ca", "subject": "CN=scep-server bench CA,O=scep-server", "key_size": 2048},
        "profiles": {"default": {"challenge": {"type": "static", "secret": {"value": CHALLENGE}}},
                     **(profiles or {})},
    }  # fmt: skip
    if database_url:
        config["database_url"] = database_url
    if keys:
        config["ca"]["keys"] = keys
    if intune:
        config["intune"] = intune
    return config


def kill_hard(pgid: int) -> None:
    """SIGKILL a whole process group (one of ours) and give the kernel a moment to reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    time.sleep(0.3)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'scep-server.db').resolve()}"


def count_certificates(url: str) -> int:
    """Certificates in the store, read directly (after the server was killed, nothing is cached)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM certificates")).scalar_one())
    finally:
        engine.dispose()


# --- PostgreSQL -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def private_database(server_url: str) -> Iterator[str]:
    """A database ``bench_<random>`` of its own on the server, dropped (connections and all) at the end."""
    server = make_url(server_url)
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool,
                          connect_args={"connect_timeout": 5})  # fmt: skip
    name = f"bench_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except (SQLAlchemyError, ImportError) as exc:
        admin.dispose()
        reason = str(exc).splitlines()[0]
        raise HarnessError(f"PostgreSQL at {server.host}:{server.port} unavailable: {reason}") from exc
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


# --- the Intune emulator --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Emulator:
    """A running emulator process: its URL, admin token, CA bundle and the app the server signs in as."""

    url: str
    pid: int
    admin_token: str
    ca_bundle: Path
    client_id: str
    client_secret: str
    tenant: str = "contoso.onmicrosoft.com"

    def settings(self) -> dict[str, Any]:
        """The server's ``intune:`` section for this emulator (as ``EmulatorServer.settings()``)."""
        return {"tenant": self.tenant, "client_id": self.client_id, "client_secret": {"value": self.client_secret},
                "authority": f"{self.url}/", "graph_resource_url": f"{self.url}/graph/", "graph_api_version": "1.0",
                "intune_resource_url": f"{self.url}/intune-api/", "ca_bundle": str(self.ca_bundle),
                "allowed_service_hosts": [HOST]}  # fmt: skip


@contextlib.contextmanager
def emulator_process(state_dir: Path, timeout: float = 30.0) -> Iterator[Emulator]:
    """``python -m scep_server.emulator`` on a free port, in its own process (its CPU is not the client's)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    token, client_id, secret = secrets.token_urlsafe(16), str(uuid.uuid4()), secrets.token_urlsafe(24)
    argv = [sys.executable, "-m", "scep_server.emulator", "--port", "0", "--state-dir", str(state_dir),
            "--client-id", client_id]  # fmt: skip
    env = client_env({"AAD_APP_KEY": secret, "INTUNE_EMULATOR_ADMIN_TOKEN": token, "SCEP_SERVER_LOG_LEVEL": "WARNING"})
    log = state_dir / "emulator.log"
    proc = spawn(argv, log, cwd=state_dir, env=env)
    try:
        yield Emulator(_emulator_url(proc, log, timeout), proc.pid, token, state_dir / "ca.pem", client_id, secret)
    finally:
        stop_group(proc)


def _emulator_url(proc: subprocess.Popen[Any], log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = EMULATOR_BANNER.search(log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise HarnessError(f"the Intune emulator did not start; its log:\n{tail(log.read_text(errors='replace'), 20)}")
