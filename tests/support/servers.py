"""The servers the functional, interop and e2e tests run against, on 127.0.0.1.

``ScepServerProcess`` writes a YAML config, runs ``scep-server --config FILE init`` and then
``scep-server --config FILE serve --bind 127.0.0.1:PORT --workers 2 --threads 4`` (gunicorn in the
foreground) in its own process group, waits for ``GET /healthz`` to answer 200, and on exit sends
SIGTERM to the group, then SIGKILL if it is still there after a grace period.

``MicromdmScepServer`` runs micromdm's ``scepserver`` (Debian package ``scep``) the same way:
``scepserver ca -init`` then ``scepserver -depot DIR -port PORT -challenge SECRET -debug``. It is a
reference SCEP server for checking our SCEP client and for benchmarks. It has no RA: its CA certificate
signs CertReps and decrypts requests, and it always encrypts CertReps with single DES. It listens on all
interfaces (it has no listen-address flag); everything here only connects to 127.0.0.1.

``running_emulator`` is the Intune emulator with a registered app, for a server to validate against.

PostgreSQL: ``SCEP_TEST_POSTGRES_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) names
the server; ``fresh_database`` makes a throwaway database on it and ``fresh_schema`` an empty schema in that;
the ``postgres_database`` and ``postgres_url`` fixtures wrap them for conftest.py files to import. An
unreachable server skips the test locally and fails it when ``CI`` is set (:mod:`tests.support.env`).
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
import sysconfig
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
import yaml
from cryptography import x509
from sqlalchemy import URL, Engine, create_engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from scep_server.emulator import EmulatorServer
from tests.support.env import unavailable
from tests.support.processes import HOST, HarnessError, client_env, free_port, http_get, spawn, stop_group, tail

SCEPSERVER = "/usr/bin/scepserver"
CHALLENGE = "s3cret"
LEGACY_PROFILE = "legacy"  # allow_des: micromdm scepclient only speaks single DES + SHA-1
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


# `serve` keeps the CA keys encrypted at rest: the interop server runs as production does, with a passphrase.
_SERVER_CONFIG = """\
data_dir: {data_dir}
ca:
  key_passphrase: {{env: SCEP_CA_PASSPHRASE, value: "interop-ca-passphrase"}}
profiles:
  default:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
  {legacy}:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
    allow_des: true
"""


def server_config(data_dir: Path, challenge: str = CHALLENGE) -> str:
    """The interop config: a ``default`` profile and a DES-allowing ``legacy`` one, static challenge."""
    return _SERVER_CONFIG.format(data_dir=data_dir, challenge=challenge, legacy=LEGACY_PROFILE)


def default_server_cmd() -> list[str]:
    """How to run our CLI: $SCEP_INTEROP_SERVER_CMD, the installed console script, or the module."""
    override = os.environ.get("SCEP_INTEROP_SERVER_CMD")
    if override:
        return shlex.split(override)
    for candidate in (Path(sysconfig.get_path("scripts")) / "scep-server", Path(sys.executable).parent / "scep-server"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    return [sys.executable, "-c", "import sys; from scep_server.cli import main; sys.exit(main())"]


class ServerProcess:
    """Shared lifecycle: spawn, wait until ready, log access, stop the whole process group."""

    startup_timeout = 30.0
    ready_path = "/healthz"
    name = "server"

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = Path(tmp_path)
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        self.log_path = self.tmp_path / f"{self.name}.log"
        self.port = 0
        self.proc: subprocess.Popen[Any] | None = None

    # -- public
    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        try:
            self._prepare()
            self._start_with_retries()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None

    # -- for subclasses
    def _prepare(self) -> None:
        raise NotImplementedError

    def _serve_argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return client_env()

    # -- internals
    def _start_with_retries(self, attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            mark = len(self.log_text())
            self.proc = spawn(self._serve_argv(self.port), self.log_path, cwd=self.tmp_path, env=self._env())
            try:
                self._wait_ready()
                return
            except HarnessError:
                recent = self.log_text()[mark:]
                self.stop()
                port_taken = "in use" in recent.lower()
                if attempt == attempts or not port_taken:
                    raise

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        url = self.base_url + self.ready_path
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(
                    f"{self.name} exited with status {self.proc.returncode} before it was ready; "
                    f"its log:\n{tail(self.log_text())}"
                )
            try:
                status, _ = http_get(url, timeout=2.0)
                if status == 200:
                    return
                last = f"HTTP {status}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise HarnessError(
            f"{self.name} not ready at {url} after {self.startup_timeout:.0f} s ({last}); "
            f"its log:\n{tail(self.log_text())}"
        )


class ScepServerProcess(ServerProcess):
    """Our server: ``init`` then ``serve`` under gunicorn on a free 127.0.0.1 port.

    ``config_yaml`` is written to ``tmp_path/scep-server.yaml``; a relative ``data_dir`` is relative
    to ``tmp_path`` (the server runs there). ``url(profile, path)`` builds SCEP URLs.
    """

    name = "scep-server"

    def __init__(
        self,
        tmp_path: Path,
        config_yaml: str,
        *,
        server_cmd: Sequence[str] | str | None = None,
        workers: int = 2,
        threads: int = 4,
        startup_timeout: float = 30.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(tmp_path)
        self.config_yaml = textwrap.dedent(config_yaml)
        if isinstance(server_cmd, str):
            server_cmd = shlex.split(server_cmd)
        self.server_cmd = list(server_cmd) if server_cmd else default_server_cmd()
        self.workers = workers
        self.threads = threads
        self.startup_timeout = startup_timeout
        self.extra_env = dict(env or {})
        self.config_path = self.tmp_path / "scep-server.yaml"
        raw = yaml.safe_load(self.config_yaml) or {}
        data_dir = Path(str(raw.get("data_dir", "var")))
        self.data_dir = data_dir if data_dir.is_absolute() else self.tmp_path / data_dir

    @property
    def ca_pem_path(self) -> Path:
        return self.data_dir / "ca" / "ca.pem"

    @property
    def ra_pem_path(self) -> Path:
        return self.data_dir / "ca" / "ra.pem"

    def url(self, profile: str | None = None, path: str = "/scep") -> str:
        """``http://127.0.0.1:PORT<path>`` plus ``/<profile>`` when a profile is named."""
        return self.base_url + path + (f"/{profile}" if profile else "")

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``scep-server --config FILE <args>`` and return its completed process."""
        return subprocess.run(
            [*self.server_cmd, "--config", str(self.config_path), *args],
            cwd=self.tmp_path,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def certs_list(self) -> str:
        """stdout of ``scep-server certs list``; raises if the command fails."""
        done = self.cli("certs", "list")
        if done.returncode != 0:
            raise HarnessError(f"certs list failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_pem_path.read_bytes())

    def _env(self) -> dict[str, str]:
        # SCEP_SERVER_* would override the config file; the test config must be the only input.
        env = {k: v for k, v in client_env().items() if not k.startswith("SCEP_SERVER_")}
        env["PYTHONUNBUFFERED"] = "1"
        # The checkout under test comes first, whatever copy of the package is installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.update(self.extra_env)
        return env

    def _prepare(self) -> None:
        self.config_path.write_text(self.config_yaml, encoding="utf-8")
        try:
            done = self.cli("init")
        except FileNotFoundError as exc:
            raise HarnessError(f"cannot run {self.server_cmd!r}: {exc}") from exc
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"$ init (exit {done.returncode})\n{done.stdout}{done.stderr}\n")
        if done.returncode != 0:
            raise HarnessError(f"scep-server init failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        for pem in (self.ca_pem_path, self.ra_pem_path):
            if not pem.is_file():
                raise HarnessError(f"scep-server init did not create {pem}:\n{done.stdout}\n{done.stderr}")

    def _serve_argv(self, port: int) -> list[str]:
        return [
            *self.server_cmd, "--config", str(self.config_path), "serve",
            "--bind", f"{HOST}:{port}", "--workers", str(self.workers), "--threads", str(self.threads),
        ]  # fmt: skip


class MicromdmScepServer(ServerProcess):
    """micromdm ``scepserver`` with a fresh CA (``scepserver ca -init``), on a free port.

    Only ``/scep`` exists there: ``url()`` accepts a profile so the same calls work for both servers,
    and ignores it. ``ca_pem_path`` is also ``ra_pem_path``: that CA signs and decrypts.
    """

    name = "micromdm-scepserver"
    ready_path = "/scep?operation=GetCACaps"

    def __init__(
        self,
        tmp_path: Path,
        challenge: str | None = None,
        *,
        key_size: int = 2048,
        debug: bool = True,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        binary: str = SCEPSERVER,
    ) -> None:
        super().__init__(tmp_path)
        self.challenge = challenge
        self.key_size = key_size
        self.debug = debug
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.binary = binary
        self.data_dir = self.tmp_path / "depot"

    @property
    def ca_pem_path(self) -> Path:
        return self.data_dir / "ca.pem"

    @property
    def ra_pem_path(self) -> Path:
        return self.ca_pem_path

    def url(self, profile: str | None = None, path: str = "/scep") -> str:
        return self.base_url + path

    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_pem_path.read_bytes())

    def _prepare(self) -> None:
        if not os.access(self.binary, os.X_OK):
            raise HarnessError(f"{self.binary} is missing: run .ci/install-deps.sh")
        argv = [self.binary, "ca", "-init", "-depot", str(self.data_dir), "-keySize", str(self.key_size)]
        done = subprocess.run(argv, cwd=self.tmp_path, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not self.ca_pem_path.is_file():
            raise HarnessError(f"scepserver ca -init failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def _serve_argv(self, port: int) -> list[str]:
        argv = [self.binary, "-depot", str(self.data_dir), "-port", str(port)]
        if self.challenge is not None:
            argv += ["-challenge", self.challenge]
        if self.debug:
            argv.append("-debug")
        return argv + self.extra_args


# --------------------------------------------------------------------------------------------- emulator


@contextmanager
def running_emulator(state_dir: Path) -> Iterator[EmulatorServer]:
    """The Intune emulator on a free port with an admin token and a registered app (its ``settings()``)."""
    with EmulatorServer(state_dir=state_dir, admin_token=secrets.token_urlsafe(16)) as emulator:
        emulator.register_client()
        yield emulator


# --------------------------------------------------------------------------------------------- PostgreSQL


def autocommit_engine(url: URL | str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 5})


@contextmanager
def fresh_database(prefix: str) -> Iterator[URL]:
    """A fresh database named ``<prefix>_<random>`` on the test server, dropped (connections and all) at the end."""
    server = make_url(os.environ.get("SCEP_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    try:
        admin = autocommit_engine(server)
    except ImportError as exc:
        unavailable(f"PostgreSQL driver missing ({exc})")
    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        admin.dispose()
        unavailable(f"PostgreSQL not available: {str(exc.orig).strip().splitlines()[0]}")
    try:
        yield server.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def fresh_schema(database: URL) -> Iterator[str]:
    """A URL whose connections work in an empty schema of their own, dropped at the end (advisory locks are per
    database, the lock keys per schema)."""
    schema = f"t_{secrets.token_hex(6)}"
    admin = autocommit_engine(database)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = database.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[URL]:
    """A fresh database for the test session (conftest.py files import this fixture)."""
    with fresh_database("scep_test") as url:
        yield url


@pytest.fixture
def postgres_url(postgres_database: URL) -> Iterator[str]:
    """A URL on the session's database whose connections work in an empty schema of their own."""
    with fresh_schema(postgres_database) as url:
        yield url
