"""Entra ID's v2.0 endpoints as MSAL for Python calls them with ``instance_discovery=False`` (intune-api.md §2).

``GET /{tenant}/v2.0/.well-known/openid-configuration`` then ``POST {token_endpoint}``; the tenant may
be named by domain or by id. The metadata names the token endpoint by tenant id, as Entra ID does.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from scep_server.emulator.tokens import EntraError
from scep_server.emulator.wire import Surface, emulator, endpoint, entra_error, origin

entra = Blueprint("entra", __name__)


@entra.get("/<tenant>/v2.0/.well-known/openid-configuration")
@endpoint("openid-configuration", Surface.ENTRA)
def openid_configuration(tenant: str) -> Response:
    _check_tenant(tenant)
    return jsonify(emulator().openid_configuration(origin()))


@entra.get("/<tenant>/discovery/v2.0/keys")
def keys(tenant: str) -> Response:
    """The JWKS that verifies the emulator's access tokens."""
    _check_tenant(tenant)
    return jsonify(emulator().jwks())


@entra.post("/<tenant>/oauth2/v2.0/token")
@endpoint("token", Surface.ENTRA)
def token(tenant: str) -> Response:
    """The client-credentials grant (form-encoded, as OAuth 2.0 requires)."""
    _check_tenant(tenant)
    response = jsonify(emulator().request_token(request.form, origin=origin()))
    response.headers["Cache-Control"] = "no-store"
    return response


def _check_tenant(tenant: str) -> None:
    if not emulator().knows_tenant(tenant):
        raise EntraError(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check to make sure you have "
                         "the correct tenant ID and are signing into the correct cloud.")


entra.register_error_handler(EntraError, entra_error)
