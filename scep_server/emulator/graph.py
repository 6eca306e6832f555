"""Microsoft Graph's service discovery for Intune's service principal (intune-api.md §3), and the app lookup.

``GET /graph/v1.0/servicePrincipals/appId={INTUNE_APP_ID}/endpoints`` with a Graph token carrying
``Application.Read.All``; ``GET /graph/v1.0/applications(appId='{client id}')`` with the same permission
lists an app registration's credentials with their dates (a secret's value never, its ``hint`` only).
For discovery only Intune's well-known app id is known (others: 404), and only ``v1.0`` and ``beta``
(others: 400), as Graph answers. Besides the two services a CA uses, the list holds one it
must skip (``IntuneEnrollmentFEService``), as Intune's real list holds many.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from scep_server.emulator.state import INTUNE_APP_ID
from scep_server.emulator.tokens import APPLICATION_READ_ROLE, AccessDenied
from scep_server.emulator.wire import Surface, denied, emulator, endpoint, error, origin

graph = Blueprint("graph", __name__, url_prefix="/graph")
GRAPH_VERSIONS = ("v1.0", "beta")


@graph.get("/<version>/servicePrincipals/appId=<app_id>/endpoints")
@endpoint("discovery", Surface.GRAPH)
def service_endpoints(version: str, app_id: str) -> Response:
    _authorize()
    if version not in GRAPH_VERSIONS:
        return error(Surface.GRAPH, 400, f"Invalid version: {version}")
    if app_id.lower() != INTUNE_APP_ID:
        return error(Surface.GRAPH, 404, f"Resource '{app_id}' does not exist or one of its queried "
                     "reference-property objects are not present.")
    context = f"{origin()}/graph/{version}/$metadata#servicePrincipals('appId%3D{app_id}')/endpoints"
    return jsonify({"@odata.context": context, "value": emulator().service_endpoints(origin())})


@graph.get("/<version>/applications(appId='<app_id>')")
@endpoint("application", Surface.GRAPH)
def application(version: str, app_id: str) -> Response:
    """An app registration by its client id: its password and key credentials' dates, never their values."""
    _authorize()
    if version not in GRAPH_VERSIONS:
        return error(Surface.GRAPH, 400, f"Invalid version: {version}")
    registration = emulator().application(app_id)
    if registration is None:
        return error(Surface.GRAPH, 404, f"Resource '{app_id}' does not exist or one of its queried "
                     "reference-property objects are not present.")
    return jsonify({"@odata.context": f"{origin()}/graph/{version}/$metadata#applications/$entity", **registration})


def _authorize() -> None:
    emulator().authorize(request.headers.get("Authorization"), resource="graph", role=APPLICATION_READ_ROLE,
                         origin=origin())


def _access_denied(exc: AccessDenied) -> Response:
    return denied(Surface.GRAPH, exc)


graph.register_error_handler(AccessDenied, _access_denied)
