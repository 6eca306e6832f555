"""Bearer-token authentication for the admin APIs (``/admin`` and ``/api/v1``).

A token is the configured ``admin_token`` (every scope) or a named API token made with
``scep-server tokens create`` (``scep_server.service.tokens``). The APIs are on when ``admin_token`` is
configured or a named token that is not revoked exists; otherwise they answer 404 (whether one exists is
remembered for a few seconds, so refused requests cost no query each; a presented named token is always
looked up). A call needs exactly ``Authorization: Bearer <token>`` (RFC 6750 §2.1; the scheme is
case-insensitive), compared in constant time; anything else is 401 with ``WWW-Authenticate: Bearer``, and a
token without the scope the call needs is 403.

The refusals are raised as werkzeug's HTTP exceptions, so each surface's error handler answers them in
its own form (plain text under ``/admin``, JSON under ``/api``).
"""

from __future__ import annotations

import hmac
import logging

from flask import current_app, g, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, NotFound, Unauthorized

from scep_server.service.tokens import ADMIN_TOKEN_GRANT, Scope, TokenGrant, TokenService
from scep_server.web.context import runtime

__all__ = ["READ_METHODS", "TOKENS_EXTENSION", "actor", "api_is_on", "bearer_token_matches", "require", "tokens"]

log = logging.getLogger("scep_server.web.auth")

TOKENS_EXTENSION = "scep_server.tokens"  # app.extensions key of the TokenService
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
REALM = "scep-server-admin"
_GRANT_KEY = "admin_grant"  # flask.g attribute of the current request's grant


def require(needed: Scope) -> TokenGrant:
    """The grant of the request's bearer token, which must allow ``needed``; remembered for :func:`actor`.

    Raises NotFound when the APIs are off, Unauthorized without a valid token, Forbidden without the scope.
    """
    expected = runtime().config.admin_token.resolve()
    grant = _grant(request.headers.get("Authorization", ""), expected)
    if grant is None:
        if not expected and not tokens().any_active():
            raise NotFound()
        log.warning("admin API: refused a request from %s", request.remote_addr)
        raise Unauthorized(
            "a valid bearer token is required (Authorization: Bearer <token>)",
            # As a token: werkzeug would leave the realm unquoted, and RFC 6750 §3 quotes it.
            www_authenticate=WWWAuthenticate("bearer", token=f'realm="{REALM}"'),
        )
    if not grant.allows(needed):
        log.warning("admin API: %s lacks the %s scope (from %s)", grant.actor, needed, request.remote_addr)
        raise Forbidden(f"this token lacks the {needed} scope")
    setattr(g, _GRANT_KEY, grant)
    return grant


def api_is_on() -> bool:
    """Whether the admin APIs answer at all: ``admin_token`` is configured or a named token is active."""
    return bool(runtime().config.admin_token.resolve()) or tokens().any_active()


def actor() -> str:
    """Who the audit log names for what the current request does (``admin-token``, ``token:<name>``)."""
    grant = g.get(_GRANT_KEY)
    if not isinstance(grant, TokenGrant):
        raise TypeError("an admin API view ran without a grant")
    return grant.actor


def tokens() -> TokenService:
    """The app's TokenService, made on first use (it keeps a small cache across requests)."""
    service = current_app.extensions.get(TOKENS_EXTENSION)
    if not isinstance(service, TokenService):
        service = current_app.extensions[TOKENS_EXTENSION] = TokenService(runtime().store)
    return service


def bearer_token_matches(authorization: str, expected: str) -> bool:
    """Whether an Authorization header is ``Bearer <expected>``; the token is compared in constant time."""
    scheme, _, offered = authorization.partition(" ")
    matches = hmac.compare_digest(offered.strip().encode(), expected.encode())
    return scheme.lower() == "bearer" and matches


def _grant(authorization: str, expected: str | None) -> TokenGrant | None:
    if expected and bearer_token_matches(authorization, expected):
        return ADMIN_TOKEN_GRANT
    scheme, _, offered = authorization.partition(" ")
    return tokens().authenticate(offered.strip()) if scheme.lower() == "bearer" else None
