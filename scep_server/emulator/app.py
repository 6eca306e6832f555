"""The emulator's Flask app: Entra ID, Graph, Intune and the admin API on one host.

========================================================================  ==================================
``GET  /{tenant}/v2.0/.well-known/openid-configuration``                  Entra ID metadata (§2)
``POST /{tenant}/oauth2/v2.0/token``                                      client-credentials grant (§2)
``GET  /{tenant}/discovery/v2.0/keys``                                    JWKS of the access-token key
``GET  /graph/v1.0/servicePrincipals/appId={INTUNE_APP_ID}/endpoints``    service discovery (§3)
``GET  /graph/v1.0/deviceManagement/managedDevices...``, ``/devices...``   device state (see ``graph_devices``)
``POST /graph/v1.0/$batch``                                               JSON batching (see ``batch``)
``POST /intune/scep/ScepActions/{validateRequest,successNotification,failureNotification}``  (§4, §5)
``POST /intune/pki/CertificateAuthorityRequests/{download,upload}...``    revocation (§4, §6)
``/admin/...``                                                            see ``admin``
========================================================================  ==================================

Section numbers refer to intune-api.md. Point a server at ``https://host:port``: authority
``{url}/``, graph_resource_url ``{url}/graph/``, intune_resource_url ``{url}/intune-api/``.
"""

from __future__ import annotations

import threading

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from scep_server.emulator.admin import ADMIN_TOKEN_KEY, admin
from scep_server.emulator.batch import batch
from scep_server.emulator.entra import entra
from scep_server.emulator.graph import graph
from scep_server.emulator.graph_devices import graph_devices
from scep_server.emulator.intune_api import pki, scep
from scep_server.emulator.state import IntuneEmulator
from scep_server.emulator.wire import EMULATOR_KEY, INTERRUPT_KEY, Surface, error


def create_app(
    emulator: IntuneEmulator, *, admin_token: str | None = None, interrupt: threading.Event | None = None
) -> Flask:
    """The WSGI app serving ``emulator``; ``interrupt``, once set, cuts injected sleeps short.

    ``admin_token`` is the admin API's bearer token; without one every admin call is refused.
    """
    app = Flask(__name__)
    app.extensions[EMULATOR_KEY] = emulator
    app.extensions[INTERRUPT_KEY] = interrupt if interrupt is not None else threading.Event()
    app.config[ADMIN_TOKEN_KEY] = admin_token
    for blueprint in (entra, graph, graph_devices, batch, scep, pki, admin):
        app.register_blueprint(blueprint)
    app.register_error_handler(HTTPException, _http_error)
    return app


def _http_error(exc: HTTPException) -> Response:
    """An unknown path or method: in Graph's error shape under ``/graph/``, else the admin API's."""
    surface = Surface.GRAPH if request.path.startswith("/graph/") else Surface.ADMIN
    return error(surface, exc.code or 500, exc.description or exc.name)
