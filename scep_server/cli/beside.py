"""``serve --with-emulator``: the Intune emulator as a child process, listening where ``intune`` points.

For development and demos. The emulator is its own program (``python -m scep_server.emulator``), so no
server module imports it. It never learns the configured client secret (it may be a real Entra ID
secret) nor anything else of the server's environment: it registers the configured client id with a
secret generated here, and the server runs with a copy of its configuration that carries this secret
instead. The admin API takes the token from ``INTUNE_EMULATOR_ADMIN_TOKEN``, or a generated one that is
logged for the developer (the simulator's ``--admin-token``). Both reach the emulator in its environment.

The emulator stops with the server: ``stop()`` when the server returns, and, however the server ends,
when the pipe on the emulator's standard input closes (``--stop-with-stdin``). Its port is checked
first (:func:`check_emulator_port`, also run by ``config check --with-emulator``): a port in use is one
ConfigError naming it, and no emulator is started.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from scep_server.config import SecretSource, ServerConfig
from scep_server.errors import ConfigError

__all__ = ["STATE_DIR", "EmulatorProcess", "check_emulator_port", "start_beside", "state_dir"]

log = logging.getLogger("scep_server.cli")
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
EMULATOR_HOST = "127.0.0.1"  # where it listens, whichever of LOCAL_HOSTS the authority names
# Its state directory under the data dir when intune.ca_bundle does not place it (config/dev.yaml and the
# simulator's --ca-bundle default say var/emulator/ca.pem).
STATE_DIR = "emulator"
DEFAULT_TENANT = "contoso.onmicrosoft.com"
# The emulator's interface: its module, environment, state files and the first line it prints when ready.
MODULE = "scep_server.emulator"
SECRET_ENV = "AAD_APP_KEY"
ADMIN_TOKEN_ENV = "INTUNE_EMULATOR_ADMIN_TOKEN"
CA_FILE = "ca.pem"
LISTENING = b"Intune emulator listening on "
# What a Python program needs of the environment to start; the server's secrets stay behind.
PASSED_ENV = ("PATH", "HOME", "LANG", "TZ", "TMPDIR", "SYSTEMROOT", "SCEP_SERVER_LOG_LEVEL")
PASSED_ENV_PREFIXES = ("PYTHON", "LC_")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class EmulatorProcess:
    """A running emulator: where it listens, its tenant, the admin API's token and the CA its TLS chains to."""

    process: subprocess.Popen[bytes]
    url: str
    tenant: str
    admin_token: str
    ca_bundle: Path
    owner: int = field(default_factory=os.getpid)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended in time; only from the process that started it (not
        from the gunicorn workers forked from it, which run this code on their way out too)."""
        if os.getpid() != self.owner:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def state_dir(config: ServerConfig) -> Path:
    """Where the emulator keeps its TLS CA (``ca.pem``): beside ``intune.ca_bundle``, else under the data dir."""
    bundle = config.intune.ca_bundle
    return Path(bundle).parent if bundle else Path(config.data_dir) / STATE_DIR


def check_emulator_port(config: ServerConfig) -> None:
    """ConfigError unless ``intune.authority`` is a local port the emulator can listen on now."""
    port = _local_port(config.intune.authority)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the emulator's server binds
        try:
            probe.bind((EMULATOR_HOST, port))
        except OSError as exc:
            raise ConfigError(f"--with-emulator: the Intune emulator cannot listen on port {port} of {EMULATOR_HOST} "
                              f"(intune.authority): {exc.strerror}; stop what listens there, or point "
                              "intune.authority at another port") from None


def start_beside(config: ServerConfig) -> tuple[EmulatorProcess, ServerConfig]:
    """Start an emulator at ``intune.authority``; return it and the configuration the server must use."""
    intune = config.intune
    check_emulator_port(config)
    port = _local_port(intune.authority)
    state = state_dir(config)
    given_token = os.environ.get(ADMIN_TOKEN_ENV) or None
    token = given_token or secrets.token_urlsafe(24)
    client_id, secret = intune.client_id or str(uuid.uuid4()), secrets.token_urlsafe(30)
    tenant = intune.tenant or DEFAULT_TENANT
    command = [sys.executable, "-m", MODULE, "--port", str(port), "--state-dir", str(state), "--tenant", tenant,
               "--client-id", client_id, "--stop-with-stdin"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               env={**_passed_environment(), SECRET_ENV: secret, ADMIN_TOKEN_ENV: token})
    emulator = EmulatorProcess(process, f"https://{EMULATOR_HOST}:{port}", tenant, token, state / CA_FILE)
    _wait_until_listening(emulator)
    if given_token:
        log.info("Intune emulator on %s (admin API token from %s)", emulator.url, ADMIN_TOKEN_ENV)
    else:
        log.warning("Intune emulator on %s; its admin API needs Authorization: Bearer %s", emulator.url, token)
    emulated = replace(intune, client_id=client_id, client_secret=SecretSource(value=secret),
                       client_certificate=None, client_key=None, client_key_password=SecretSource())
    return emulator, replace(config, intune=emulated)


def _local_port(authority: str) -> int:
    """The port of a 127.0.0.1/localhost authority: the emulator plays Entra ID only where it listens."""
    parts = urlsplit(authority)
    if parts.hostname not in LOCAL_HOSTS:
        raise ConfigError(f"--with-emulator needs intune.authority on https://127.0.0.1:PORT/ (the emulator), "
                          f"not {parts.hostname}: it would stand in for that host")
    try:
        return parts.port or 443
    except ValueError:
        raise ConfigError(f"--with-emulator: intune.authority {authority!r} has no valid port") from None


def _passed_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items()
            if name in PASSED_ENV or name.startswith(PASSED_ENV_PREFIXES)}


def _wait_until_listening(emulator: EmulatorProcess) -> None:
    """The first line of its banner once it listens; end of file (it exited) or silence is a failure."""
    stdout = emulator.process.stdout
    assert stdout is not None
    ready, _, _ = select.select([stdout], [], [], START_TIMEOUT)
    if not (ready and stdout.readline().startswith(LISTENING)):
        emulator.stop()
        raise ConfigError(f"--with-emulator: the Intune emulator did not start on {emulator.url} (see above)")
