"""Intune's SCEP validation and CA revocation services over HTTP (intune-api.md §4-§6).

Every call is checked in this order: fault injection; the bearer token (401: missing, not signed by the
emulator, expired, another audience or tenant; 403: no ``scep_challenge_provider`` role); the
``api-version`` header (400); ``client-request-id`` (a GUID) and ``UserAgent`` headers (400); the body's
shape (400). Only then is the call answered with ``{"code", "errorDescription"}`` or ``{"value"}``.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from scep_server.emulator import bodies
from scep_server.emulator.bodies import BodyError
from scep_server.emulator.codes import Code
from scep_server.emulator.tokens import AccessDenied
from scep_server.emulator.wire import (
    PKI_API_VERSION,
    SCEP_API_VERSION,
    Surface,
    authorize_intune,
    denied,
    emulator,
    endpoint,
    error,
    injected_code,
    intune_call,
    json_body,
)

scep = Blueprint("intune_scep", __name__, url_prefix="/intune/scep")
pki = Blueprint("intune_pki", __name__, url_prefix="/intune/pki")


@scep.post("/ScepActions/validateRequest")
@endpoint("validateRequest", Surface.INTUNE)
def validate_request() -> Response:
    """Validate a device's CSR and challenge (§5)."""
    details = _checked_call(SCEP_API_VERSION)
    body = bodies.validate_request(json_body())
    code, description = emulator().validate(body.transaction_id, body.certificate_request,
                                            details={**details, "callerInfo": body.caller_info},
                                            forced_code=injected_code())
    return jsonify(code=code, errorDescription=description)


@scep.post("/ScepActions/successNotification")
@endpoint("successNotification", Surface.INTUNE)
def success_notification() -> Response:
    """Record that the CA issued the certificate (§5)."""
    details = _checked_call(SCEP_API_VERSION)
    notification = bodies.success_notification(json_body())
    return _notified("success", notification, details)


@scep.post("/ScepActions/failureNotification")
@endpoint("failureNotification", Surface.INTUNE)
def failure_notification() -> Response:
    """Record that the CA did not issue the certificate (§5)."""
    details = _checked_call(SCEP_API_VERSION)
    notification = bodies.failure_notification(json_body())
    return _notified("failure", notification, details)


@pki.post("/CertificateAuthorityRequests/downloadRevocationRequests")
@endpoint("downloadRevocationRequests", Surface.INTUNE)
def download_revocation_requests() -> Response:
    """The pending revocation requests, oldest first (§6)."""
    _checked_call(PKI_API_VERSION)
    max_requests, issuer_name = bodies.download_parameters(json_body())
    return jsonify(value=emulator().download_revocations(max_requests, issuer_name))


@pki.post("/CertificateAuthorityRequests/uploadRevocationResults")
@endpoint("uploadRevocationResults", Surface.INTUNE)
def upload_revocation_results() -> Response:
    """Accept the CA's results for downloaded requests (§6)."""
    _checked_call(PKI_API_VERSION)
    results = bodies.revocation_results(json_body())
    return jsonify(value=emulator().upload_revocation_results(results))


def _checked_call(api_version: str) -> dict[str, str]:
    authorize_intune()
    return intune_call(api_version)


def _notified(kind: str, notification: dict[str, object], details: dict[str, str]) -> Response:
    code = injected_code() or Code.SUCCESS
    emulator().record_notification(kind, notification, details={**details, "answer": str(code)})
    description = "" if code == Code.SUCCESS else "injected by the emulator"
    return jsonify(code=str(code), errorDescription=description)


def _access_denied(exc: AccessDenied) -> Response:
    return denied(Surface.INTUNE, exc)


def _bad_body(exc: BodyError) -> Response:
    return error(Surface.INTUNE, 400, str(exc))


for _blueprint in (scep, pki):
    _blueprint.register_error_handler(AccessDenied, _access_denied)
    _blueprint.register_error_handler(BodyError, _bad_body)
