"""An Intune emulator: Entra ID (tokens), Microsoft Graph (service discovery) and Intune's SCEP validation
and CA revocation APIs, faithful to intune-api.md, for testing a CA's integration without a tenant.

Nothing in the server imports this package except the ``intune-emulator`` command; it talks to a
server only over HTTP.

::

    with EmulatorServer(state_dir=tmp) as emulator:
        client_id, secret = emulator.register_client()
        config = emulator.settings()            # the ``intune:`` configuration for scep-server
        challenge = emulator.emulator.mint_challenge(ChallengeSpec(subject="CN=alice@contoso.com"))
"""

from __future__ import annotations

from .app import create_app
from .challenges import ChallengeSpec
from .codes import Code
from .server import EmulatorServer
from .state import IntuneEmulator

__all__ = ["ChallengeSpec", "Code", "EmulatorServer", "IntuneEmulator", "create_app"]
