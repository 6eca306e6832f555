"""The admin API: list, show and revoke certificates over HTTP (JSON), behind a bearer token.

Kept as it was when ``/api/v1`` (``api_v1.py``) came: the same answers, its errors plain text. Tokens and
scopes are :mod:`scep_server.web.auth`'s: ``read`` for the GETs, ``revoke`` for a revocation, ``admin`` for
both; the API answers 404 while no token is configured or active, 401 without a valid bearer token, 403
without the scope. Put it behind TLS and a network boundary: the token is the only credential.
Malformed parameters and bodies are 400, never 500. Revocations go through the same RevocationService
as the CLI and Intune's requests, so OCSP and the CRL follow at once; the audit log names the token.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request

from scep_server.service.certificates import (
    STATUSES,
    NoSuchCertificate,
    Revoked,
    WasRevoked,
    describe,
    parse_serial,
)
from scep_server.service.revocation import REASON_NAMES
from scep_server.service.tokens import Scope
from scep_server.web import auth
from scep_server.web.auth import bearer_token_matches
from scep_server.web.context import runtime

__all__ = ["bearer_token_matches", "bp"]  # bearer_token_matches: where it was before auth.py

log = logging.getLogger("scep_server.web.admin")

bp = Blueprint("admin", __name__, url_prefix="/admin")
LIMIT = re.compile(r"[0-9]{1,4}")  # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
MAX_LIMIT = 1000


@bp.before_request
def _authenticate() -> None:
    auth.require(_needed_scope())


def _needed_scope() -> Scope:
    if request.endpoint == "admin.revoke_certificate":
        return Scope.REVOKE
    return Scope.READ if request.method in auth.READ_METHODS else Scope.ADMIN


@bp.get("/certificates")
def list_certificates() -> Response:
    status = request.args.get("status")
    if status is not None and status not in STATUSES:
        abort(400, description=f"status must be {' or '.join(STATUSES)}")
    limit = request.args.get("limit", "100")
    if not LIMIT.fullmatch(limit) or not 1 <= int(limit) <= MAX_LIMIT:
        abort(400, description=f"limit must be 1-{MAX_LIMIT}")
    records = runtime().certificates.page(limit=int(limit), status=status, profile=request.args.get("profile"))
    return jsonify({"certificates": [describe(r) for r in records]})


@bp.get("/certificates/<serial>")
def show_certificate(serial: str) -> Response:
    record = runtime().certificates.show(_serial(serial))
    if record is None:
        abort(404, description="no such certificate")
    return jsonify(describe(record))


@bp.post("/certificates/<serial>/revoke")
def revoke_certificate(serial: str) -> Response | tuple[Response, int]:
    """An unknown reason name is answered 400 by the app's error handler."""
    reason = _reason(_json_body())
    actor = auth.actor()
    match runtime().certificates.revoke(_serial(serial), reason=reason, actor=actor, source="api"):
        case Revoked(certificate=record):
            log.info("admin API: revoked %x (%s) for %s by %s", record.serial, reason, request.remote_addr, actor)
            return jsonify(describe(record))
        case WasRevoked(certificate=record):
            return jsonify({"error": "already revoked", "certificate": describe(record)}), 409
        case NoSuchCertificate():
            abort(404, description="no such certificate")


def _json_body() -> Any:
    """The request body read as JSON whatever its Content-Type; None when empty; 400 when it is not JSON.

    A body that is there but cannot be read must not be taken for "no reason given": an admin who sent
    ``{"reason": "keyCompromise"`` would otherwise get the certificate revoked as unspecified.
    """
    if not request.get_data(cache=True):
        return None
    try:
        return json.loads(request.get_data(cache=True))
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        abort(400, description='the body must be JSON such as {"reason": "keyCompromise"}')


def _reason(body: Any) -> str:
    """The revocation reason of a JSON body: absent or ``{}`` means unspecified; not an object is 400."""
    if body is None:
        return "unspecified"
    if not isinstance(body, dict):
        abort(400, description='the body must be a JSON object such as {"reason": "keyCompromise"}')
    reason = body.get("reason", "unspecified")
    if not isinstance(reason, str):
        abort(400, description=f"reason must be one of {', '.join(REASON_NAMES)}")
    return reason


def _serial(text: str) -> int:
    try:
        return parse_serial(text)
    except ValueError:
        abort(400, description="the serial number must be hexadecimal, positive and at most 20 octets")

