"""The admin API: what Intune's console and a test harness do to the emulator, as JSON under ``/admin/``.

Every call needs ``Authorization: Bearer <admin_token>`` (401 otherwise); an app created without a
token refuses every admin call, so the admin API is never open. Bodies and answers use camelCase keys;
a malformed body answers 400 ``{"error"}``.

=======  ==========================  ===========================================================
POST     /admin/challenges           ChallengeSpec JSON -> 201 {"challenge", "spec"}
GET      /admin/validations          {"value": [every validateRequest]}
GET      /admin/notifications        {"value": [every success/failure notification]}
POST     /admin/faults               {"endpoint", "status", "latency", "hang", "malformedJson",
                                     "authFailure", "times", "seconds", "code", "retryAfter"} -> 204
GET      /admin/faults               the active faults per endpoint
DELETE   /admin/faults               clear every fault -> 204
GET      /admin/counters             calls per endpoint and tokens:<scope>
POST     /admin/revocations          {"serials": [...], "issuerName", "caConfiguration"?} -> 201 {"requestContexts"}
GET      /admin/revocation-results   {"value": [every uploaded result]}
POST     /admin/apps                 {"clientId", "clientSecret"?, "certificate"? (PEM), "intuneRoles"?,
                                     "graphRoles"?, "secretExpires"? (ISO 8601)} -> 201
POST     /admin/apps/<id>/roles      {"intuneRoles"?, "graphRoles"?}: grant or revoke the consent -> 204
POST     /admin/services             {"providerName", "uri"} -> 204
POST     /admin/untarget             {"certificateRequestId"} -> 204
POST     /admin/devices              {"name", "os", "intuneDeviceId"?, "entraDeviceId"?, "osVersion"?,
                                     "userPrincipalName"?} -> 201 the device
GET      /admin/devices              {"value": [every device]}
GET      /admin/devices/<id>         the device (by its Intune id, Entra device id or Entra object id)
POST     /admin/devices/<id>/<change>  delete-intune, retire, wipe, management-state
                                     {"managementState"}, delete-entra {"restorable"?}, disable,
                                     enable -> 200 the device
POST     /admin/devices/<id>/challenges  ChallengeSpec JSON ("subject" defaults to CN=<name>) -> 201
                                     {"challenge", "spec"}: deviceId and the IntuneDeviceId:// SAN URI set
DELETE   /admin/delta-tokens         every Graph skip/delta token is forgotten (syncStateNotFound) -> 204
=======  ==========================  ===========================================================

A device is ``{"intuneDeviceId", "entraDeviceId", "entraObjectId", "name", "os", "managementState"
(null once deleted in Intune), "accountEnabled" (null once deleted in Entra ID), "intuneDeleted",
"entraDeleted", "entraRemoval" (null, "deleted" or "changed")}``; see ``devices``. An unknown device
answers 404, a change to a side already deleted 409. Device fields may also be spelt in snake_case
(``intune_device_id``).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography import x509
from flask import Blueprint, Response, current_app, jsonify, request

from scep_server.emulator.devices import DeviceStateError, UnknownDevice
from scep_server.emulator.tokens import GRAPH_ROLES, INTUNE_ROLE
from scep_server.emulator.wire import Surface, emulator, error, json_body
from scep_server.intune.contract import ChallengeSpec

ADMIN_TOKEN_KEY = "EMULATOR_ADMIN_TOKEN"
admin = Blueprint("admin", __name__, url_prefix="/admin")
_FAULT_KEYS = {"status": "status", "latency": "latency", "hang": "hang", "malformedJson": "malformed_json",
               "authFailure": "auth_failure", "times": "times", "code": "code", "retryAfter": "retry_after",
               "seconds": "seconds"}
_DEVICE_KEYS = {"name": "name", "os": "os", "intuneDeviceId": "intune_device_id", "entraDeviceId": "entra_device_id",
                "osVersion": "os_version", "userPrincipalName": "user_principal_name"}
_DEVICE_ALIASES = {**{value: value for value in _DEVICE_KEYS.values()}, **_DEVICE_KEYS}


@admin.before_request
def _require_admin_token() -> Response | None:
    expected: str | None = current_app.config.get(ADMIN_TOKEN_KEY)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if expected and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode()):
        return None
    return error(Surface.ADMIN, 401, "the admin API needs Authorization: Bearer <admin token>",
                 headers={"WWW-Authenticate": 'Bearer realm="intune-emulator-admin"'})


@admin.post("/challenges")
def mint_challenge() -> tuple[Response, int]:
    spec = ChallengeSpec.from_json(_payload())
    return jsonify(challenge=emulator().mint_challenge(spec), spec=spec.to_json()), 201


@admin.get("/validations")
def validations() -> Response:
    return jsonify(value=emulator().validations)


@admin.get("/notifications")
def notifications() -> Response:
    return jsonify(value=emulator().notifications)


@admin.post("/faults")
def inject_fault() -> tuple[str, int]:
    payload = _payload()
    unknown = sorted(set(payload) - set(_FAULT_KEYS) - {"endpoint"})
    if unknown or not isinstance(payload.get("endpoint"), str):
        raise ValueError(f"a fault is {{'endpoint', {', '.join(_FAULT_KEYS)}}}; unknown: {', '.join(unknown)}")
    options = {_FAULT_KEYS[key]: value for key, value in payload.items() if key != "endpoint" and value is not None}
    emulator().inject_fault(payload["endpoint"], **options)
    return "", 204


@admin.get("/faults")
def faults() -> Response:
    return jsonify(emulator().faults())


@admin.delete("/faults")
def clear_faults() -> tuple[str, int]:
    emulator().clear_faults()
    return "", 204


@admin.get("/counters")
def counters() -> Response:
    return jsonify(emulator().counters())


@admin.post("/revocations")
def queue_revocations() -> tuple[Response, int]:
    payload = _payload()
    serials, issuer = payload.get("serials"), payload.get("issuerName")
    ca_configuration = payload.get("caConfiguration", "")
    if not isinstance(serials, list) or not serials or not all(isinstance(s, str) and s for s in serials):
        raise ValueError("serials must be a non-empty list of hex serial numbers")
    if not isinstance(issuer, str) or not issuer or not isinstance(ca_configuration, str):
        raise ValueError("issuerName must be a non-empty string (and caConfiguration a string)")
    contexts = [emulator().queue_revocation(serial, issuer, ca_configuration) for serial in serials]
    return jsonify(requestContexts=contexts), 201


@admin.get("/revocation-results")
def revocation_results() -> Response:
    return jsonify(value=emulator().revocation_results)


@admin.post("/apps")
def register_app() -> tuple[Response, int]:
    payload = _payload()
    client_id, secret, pem = payload.get("clientId"), payload.get("clientSecret"), payload.get("certificate")
    if not isinstance(client_id, str) or not all(v is None or isinstance(v, str) for v in (secret, pem)):
        raise ValueError("an app is {clientId, clientSecret?, certificate? (PEM), intuneRoles?, secretExpires?}")
    certificate = x509.load_pem_x509_certificate(pem.encode()) if pem else None
    expires = _timestamp(payload["secretExpires"]) if payload.get("secretExpires") is not None else None
    emulator().register_app(client_id, secret=secret, certificate=certificate,
                            intune_roles=_roles(payload.get("intuneRoles", [INTUNE_ROLE]), "intuneRoles"),
                            graph_roles=_roles(payload.get("graphRoles", list(GRAPH_ROLES)), "graphRoles"),
                            secret_expires=expires)
    return jsonify(clientId=client_id), 201


@admin.post("/apps/<client_id>/roles")
def set_roles(client_id: str) -> tuple[str, int]:
    """Grant or revoke the admin consent: the Intune and/or Graph roles the app's next tokens carry."""
    payload = _payload()
    if "intuneRoles" not in payload and "graphRoles" not in payload:
        raise ValueError("give intuneRoles, graphRoles or both")
    intune = _roles(payload["intuneRoles"], "intuneRoles") if "intuneRoles" in payload else None
    graph = _roles(payload["graphRoles"], "graphRoles") if "graphRoles" in payload else None
    if intune is not None:
        emulator().set_intune_roles(client_id, intune)
    if graph is not None:
        emulator().set_graph_roles(client_id, graph)
    return "", 204


def _roles(roles: Any, name: str) -> tuple[str, ...]:
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise ValueError(f"{name} must be a list of strings")
    return tuple(roles)


def _timestamp(value: Any) -> float:
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError("secretExpires must be an ISO 8601 time with its offset, e.g. 2030-01-01T00:00:00Z")
    return moment.timestamp()


@admin.post("/services")
def set_service() -> tuple[str, int]:
    payload = _payload()
    name, uri = payload.get("providerName"), payload.get("uri")
    if not isinstance(name, str) or not name or not isinstance(uri, str) or not uri.startswith("https://"):
        raise ValueError("a service is {providerName, uri (https://...)}")
    emulator().set_service_uri(name, uri)
    return "", 204


@admin.post("/untarget")
def untarget() -> tuple[str, int]:
    request_id = _payload().get("certificateRequestId")
    if not isinstance(request_id, str) or not request_id:
        raise ValueError("certificateRequestId is required")
    emulator().untarget(request_id)
    return "", 204


@admin.post("/devices")
def create_device() -> tuple[Response, int]:
    payload = _payload()
    unknown = sorted(set(payload) - set(_DEVICE_ALIASES))
    if unknown:
        raise ValueError(f"a device is {{{', '.join(_DEVICE_KEYS)}}}; unknown: {', '.join(unknown)}")
    fields = {_DEVICE_ALIASES[key]: value for key, value in payload.items() if value is not None}
    if not all(isinstance(value, str) for value in fields.values()):
        raise ValueError("every device field is a string")
    name, os = fields.pop("name", ""), fields.pop("os", "")
    return jsonify(emulator().devices.create(name, os, **fields)), 201


@admin.get("/devices")
def list_devices() -> Response:
    return jsonify(value=emulator().devices.views())


@admin.get("/devices/<device>")
def get_device(device: str) -> Response:
    return jsonify(emulator().devices.get(device))


@admin.post("/devices/<device>/delete-intune")
def delete_intune_device(device: str) -> Response:
    return jsonify(emulator().devices.delete_intune(device))


@admin.post("/devices/<device>/retire")
def retire_device(device: str) -> Response:
    return jsonify(emulator().devices.set_management_state(device, "retirePending"))


@admin.post("/devices/<device>/wipe")
def wipe_device(device: str) -> Response:
    return jsonify(emulator().devices.set_management_state(device, "wipePending"))


@admin.post("/devices/<device>/management-state")
def set_management_state(device: str) -> Response:
    state = _payload().get("managementState")
    if not isinstance(state, str):
        raise ValueError("managementState is required")
    return jsonify(emulator().devices.set_management_state(device, state))


@admin.post("/devices/<device>/delete-entra")
def delete_entra_device(device: str) -> Response:
    restorable = _optional_payload().get("restorable", False)
    if type(restorable) is not bool:
        raise ValueError("restorable must be true or false")
    return jsonify(emulator().devices.delete_entra(device, restorable=restorable))


@admin.post("/devices/<device>/disable")
def disable_device(device: str) -> Response:
    return jsonify(emulator().devices.set_account_enabled(device, False))


@admin.post("/devices/<device>/enable")
def enable_device(device: str) -> Response:
    return jsonify(emulator().devices.set_account_enabled(device, True))


@admin.post("/devices/<device>/challenges")
def mint_device_challenge(device: str) -> tuple[Response, int]:
    """A challenge for the device: its Intune id as deviceId, and the IntuneDeviceId:// SAN URI."""
    view = emulator().devices.get(device)
    payload = dict(_optional_payload())
    if payload.get("deviceId", view["intuneDeviceId"]) != view["intuneDeviceId"]:
        raise ValueError("deviceId is the device's Intune id; leave it out")
    payload.setdefault("subject", f"CN={view['name']}")
    challenge, spec = emulator().mint_device_challenge(device, ChallengeSpec.from_json(payload))
    return jsonify(challenge=challenge, spec=spec.to_json()), 201


@admin.delete("/delta-tokens")
def forget_delta_tokens() -> tuple[str, int]:
    emulator().devices.forget_delta_tokens()
    return "", 204


def _optional_payload() -> Mapping[str, Any]:
    """The JSON object body, or an empty one when none is sent."""
    return _payload() if request.get_data() else {}


def _payload() -> Mapping[str, Any]:
    payload = json_body()
    if not isinstance(payload, Mapping):
        raise ValueError("the body must be a JSON object sent as application/json")
    return payload


def _bad_request(exc: ValueError) -> Response:
    return error(Surface.ADMIN, 400, str(exc))


def _unknown_device(exc: UnknownDevice) -> Response:
    return error(Surface.ADMIN, 404, str(exc.args[0]))


def _device_conflict(exc: DeviceStateError) -> Response:
    return error(Surface.ADMIN, 409, str(exc))


admin.register_error_handler(ValueError, _bad_request)
admin.register_error_handler(UnknownDevice, _unknown_device)
admin.register_error_handler(DeviceStateError, _device_conflict)
