"""``scep-server serve --with-emulator``: the emulator inside the server's process, where ``intune`` points.

For development and demos. The one module of this package that reads the server's configuration. The
emulator never learns the configured client secret (it may be a real Entra ID secret): it registers the
configured client id with a secret generated here, and the server runs with a copy of its configuration
that carries this secret instead. The admin API takes the token from ``INTUNE_EMULATOR_ADMIN_TOKEN``, or
a generated one that is logged for the developer (the simulator's ``--admin-token``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from scep_server.config import SecretSource, ServerConfig
from scep_server.emulator.cli import ADMIN_TOKEN_ENV
from scep_server.emulator.server import EmulatorServer
from scep_server.emulator.state import IntuneEmulator
from scep_server.errors import ConfigError

__all__ = ["start_beside"]

log = logging.getLogger("scep_server.emulator")
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
DEFAULT_TENANT = "contoso.onmicrosoft.com"


def start_beside(config: ServerConfig) -> tuple[EmulatorServer, ServerConfig]:
    """Start an emulator at ``intune.authority``; return it and the configuration the server must use."""
    intune = config.intune
    port = _local_port(intune.authority)
    state_dir = Path(intune.ca_bundle).parent if intune.ca_bundle else Path(config.data_dir) / "emulator"
    given_token = os.environ.get(ADMIN_TOKEN_ENV) or None
    server = EmulatorServer(IntuneEmulator(tenant=intune.tenant or DEFAULT_TENANT), port=port, state_dir=state_dir,
                            admin_token=given_token)
    client_id, secret = server.register_client(intune.client_id)  # a generated secret, never the configured one
    server.start()
    if given_token:
        log.info("Intune emulator on %s (admin API token from %s)", server.url, ADMIN_TOKEN_ENV)
    else:
        log.warning("Intune emulator on %s; its admin API needs Authorization: Bearer %s", server.url,
                    server.admin_token)
    emulated = replace(intune, client_id=client_id, client_secret=SecretSource(value=secret),
                       client_certificate=None, client_key=None, client_key_password=SecretSource())
    return server, replace(config, intune=emulated)


def _local_port(authority: str) -> int:
    """The port of a 127.0.0.1/localhost authority: the emulator plays Entra ID only where it listens."""
    parts = urlsplit(authority)
    if parts.hostname not in LOCAL_HOSTS:
        raise ConfigError(f"--with-emulator needs intune.authority on https://127.0.0.1:PORT/ (the emulator), "
                          f"not {parts.hostname}: it would stand in for that host")
    return parts.port or 443
