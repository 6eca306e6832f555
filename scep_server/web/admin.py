"""The admin API: list, show and revoke certificates over HTTP (JSON), behind a bearer token.

Off unless ``admin_token`` is configured (answers 404 then). Every call needs exactly
``Authorization: Bearer <token>`` (RFC 6750 §2.1; the scheme is case-insensitive), compared in constant
time; anything else is 401 with ``WWW-Authenticate: Bearer``. Put it behind TLS and a network boundary:
the token is the only credential. Malformed parameters and bodies are 400, never 500. Revocations go
through the same RevocationService as the CLI and Intune's requests, so OCSP and the CRL follow at once.
"""

from __future__ import annotations

import hmac
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
from scep_server.web.context import runtime

log = logging.getLogger("scep_server.web.admin")

bp = Blueprint("admin", __name__, url_prefix="/admin")
LIMIT = re.compile(r"[0-9]{1,4}")  # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
MAX_LIMIT = 1000


@bp.before_request
def _authenticate() -> Response | None:
    expected = runtime().config.admin_token.resolve()
    if not expected:
        abort(404)
    if bearer_token_matches(request.headers.get("Authorization", ""), expected):
        return None
    log.warning("admin API: refused a request from %s", request.remote_addr)
    return Response("a valid bearer token is required (Authorization: Bearer <token>)\n", status=401,
                    mimetype="text/plain", headers={"WWW-Authenticate": 'Bearer realm="scep-server-admin"'})


def bearer_token_matches(authorization: str, expected: str) -> bool:
    """Whether an Authorization header is ``Bearer <expected>``; the token is compared in constant time."""
    scheme, _, offered = authorization.partition(" ")
    matches = hmac.compare_digest(offered.strip().encode(), expected.encode())
    return scheme.lower() == "bearer" and matches


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
    match runtime().certificates.revoke(_serial(serial), reason=reason, actor="admin-token", source="api"):
        case Revoked(certificate=record):
            log.info("admin API: revoked %x (%s) for %s", record.serial, reason, request.remote_addr)
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

