"""An Intune emulator: Entra ID (tokens), Microsoft Graph (service discovery; Intune's managed devices and
Entra ID's devices, with delta queries and JSON batching) and Intune's SCEP validation and CA revocation
APIs, faithful to intune-api.md, for testing a CA's integration without a tenant (devices:
docs/emulator-devices.md).

A tool of its own (``scep-intune-emulator``, ``python -m scep_server.emulator``): nothing in the server
imports this package, and it shares only ``pki/``, ``scep/`` and the Intune contract
(``scep_server.intune.contract``) with it; it talks to a server only over HTTP.

::

    with EmulatorServer(state_dir=tmp) as emulator:
        client_id, secret = emulator.register_client()
        config = emulator.settings()            # the ``intune:`` configuration for scep-server
        challenge = emulator.emulator.mint_challenge(ChallengeSpec(subject="CN=alice@contoso.com"))
"""

from __future__ import annotations

from scep_server.emulator.app import create_app
from scep_server.emulator.codes import Code
from scep_server.emulator.server import EmulatorServer
from scep_server.emulator.state import IntuneEmulator

__all__ = ["Code", "EmulatorServer", "IntuneEmulator", "create_app"]
