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

from ..revocation_service import REASON_NAMES, UnknownRevocationReason
from ..store import AlreadyRevoked, CertificateNotFound, CertificateRecord, CertStatus, parse_serial_hex
from . import runtime

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
    if status is not None and status not in {s.value for s in CertStatus}:
        abort(400, description="status must be valid or revoked")
    limit = request.args.get("limit", "100")
    if not LIMIT.fullmatch(limit) or not 1 <= int(limit) <= MAX_LIMIT:
        abort(400, description=f"limit must be 1-{MAX_LIMIT}")
    records = runtime().store.list_certificates(
        limit=int(limit), status=CertStatus(status) if status else None, profile=request.args.get("profile")
    )
    return jsonify({"certificates": [_describe(r) for r in records]})


@bp.get("/certificates/<serial>")
def show_certificate(serial: str) -> Response:
    record = runtime().store.get_certificate(_serial(serial), runtime().ca.issuer_name)
    if record is None:
        abort(404, description="no such certificate")
    return jsonify(_describe(record))


@bp.post("/certificates/<serial>/revoke")
def revoke_certificate(serial: str) -> Response | tuple[Response, int]:
    reason = _reason(_json_body())
    try:
        record = runtime().revocations.revoke(_serial(serial), reason=reason)
    except UnknownRevocationReason:
        abort(400, description=f"reason must be one of {', '.join(REASON_NAMES)}")
    except CertificateNotFound:
        abort(404, description="no such certificate")
    except AlreadyRevoked as exc:
        return jsonify({"error": "already revoked", "certificate": _describe(exc.certificate)}), 409
    log.info("admin API: revoked %x (%s) for %s", record.serial, reason, request.remote_addr)
    return jsonify(_describe(record))


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
        return parse_serial_hex(text)
    except ValueError:
        abort(400, description="the serial number must be hexadecimal, positive and at most 20 octets")


def _describe(record: CertificateRecord) -> dict[str, Any]:
    return {
        "serial": f"{record.serial:x}",
        "subject": record.subject,
        "issuer": record.issuer,
        "sans": list(record.sans),
        "status": record.status.value,
        "profile": record.profile,
        "transaction_id": record.transaction_id,
        "not_before": record.not_before.isoformat(),
        "not_after": record.not_after.isoformat(),
        "issued_at": record.issued_at.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "revocation_reason": record.revocation_reason,
        "sha1_thumbprint": record.sha1_thumbprint,
        "sha256_thumbprint": record.sha256_thumbprint,
    }
