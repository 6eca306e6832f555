"""The admin API: list, show and revoke certificates over HTTP (JSON), behind a bearer token.

A token is the configured ``admin_token`` (every scope) or a named API token made with
``scep-server tokens create`` (``scep_server.service.tokens``): ``read`` for the GETs, ``revoke`` for a
revocation, ``admin`` for both. The API is on when ``admin_token`` is configured or a named token that
is not revoked exists; otherwise it answers 404 (whether one exists is remembered for a few seconds,
so refused requests cost no query each; a presented named token is always looked up). Every call needs
exactly ``Authorization: Bearer <token>`` (RFC 6750 §2.1; the scheme is case-insensitive), compared in
constant time; anything else is 401 with ``WWW-Authenticate: Bearer``, and a token without the scope
the call needs is 403. Put it behind TLS and a network boundary: the token is the only credential.
Malformed parameters and bodies are 400, never 500. Revocations go through the same RevocationService
as the CLI and Intune's requests, so OCSP and the CRL follow at once; the audit log names the token.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, jsonify, request

from scep_server.service.certificates import (
    STATUSES,
    NoSuchCertificate,
    Revoked,
    WasRevoked,
    describe,
    parse_serial,
)
from scep_server.service.revocation import REASON_NAMES
from scep_server.service.tokens import ADMIN_TOKEN_GRANT, Scope, TokenGrant, TokenService
from scep_server.web.context import runtime

log = logging.getLogger("scep_server.web.admin")

bp = Blueprint("admin", __name__, url_prefix="/admin")
LIMIT = re.compile(r"[0-9]{1,4}")  # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
MAX_LIMIT = 1000
TOKENS_EXTENSION = "scep_server.tokens"  # app.extensions key of the TokenService
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@bp.before_request
def _authenticate() -> Response | None:
    expected = runtime().config.admin_token.resolve()
    authorization = request.headers.get("Authorization", "")
    grant = _grant(authorization, expected)
    if grant is None:
        if not expected and not _tokens().any_active():
            abort(404)
        log.warning("admin API: refused a request from %s", request.remote_addr)
        return Response("a valid bearer token is required (Authorization: Bearer <token>)\n", status=401,
                        mimetype="text/plain", headers={"WWW-Authenticate": 'Bearer realm="scep-server-admin"'})
    needed = _needed_scope()
    if not grant.allows(needed):
        log.warning("admin API: %s lacks the %s scope (from %s)", grant.actor, needed, request.remote_addr)
        return Response(f"this token lacks the {needed} scope\n", status=403, mimetype="text/plain")
    g.admin_grant = grant
    return None


def _grant(authorization: str, expected: str | None) -> TokenGrant | None:
    if expected and bearer_token_matches(authorization, expected):
        return ADMIN_TOKEN_GRANT
    scheme, _, offered = authorization.partition(" ")
    return _tokens().authenticate(offered.strip()) if scheme.lower() == "bearer" else None


def _needed_scope() -> Scope:
    if request.endpoint == "admin.revoke_certificate":
        return Scope.REVOKE
    return Scope.READ if request.method in READ_METHODS else Scope.ADMIN


def _tokens() -> TokenService:
    """The app's TokenService, made on first use (it keeps a small cache across requests)."""
    service = current_app.extensions.get(TOKENS_EXTENSION)
    if not isinstance(service, TokenService):
        service = current_app.extensions[TOKENS_EXTENSION] = TokenService(runtime().store)
    return service


def _actor() -> str:
    grant = g.get("admin_grant")
    if not isinstance(grant, TokenGrant):
        raise TypeError("an admin API view ran without a grant")
    return grant.actor


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
    match runtime().certificates.revoke(_serial(serial), reason=reason, actor=_actor(), source="api"):
        case Revoked(certificate=record):
            log.info("admin API: revoked %x (%s) for %s by %s", record.serial, reason, request.remote_addr, _actor())
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

