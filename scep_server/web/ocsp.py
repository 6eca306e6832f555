"""The OCSP responder over HTTP (RFC 6960 Appendix A; GET and caching as in RFC 5019 §5 and §6).

``POST /ocsp`` takes the DER request as the body (``application/ocsp-request``); ``GET /ocsp/<base64>``
carries it base64-encoded (then URL-encoded) in the path. Every answer is HTTP 200 with an
``application/ocsp-response``, errors included: the OCSP status tells malformedRequest, unauthorized
and tryLater apart. Successful responses may be cached by HTTP caches until their nextUpdate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from urllib.parse import unquote

from flask import Blueprint, Response, request
from werkzeug.http import http_date

from scep_server.service.publishing import OcspAnswer
from scep_server.web.context import runtime

bp = Blueprint("ocsp", __name__)

OCSP_RESPONSE = "application/ocsp-response"
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=_-]")


def ocsp_post() -> Response:
    """RFC 6960 A.1: the request is the body, whatever Content-Type the client sent."""
    return _reply(runtime().ocsp.respond(request.get_data(cache=False)))


def ocsp_get(encoded: str) -> Response:
    """RFC 6960 A.1: ``GET {url}/{url-encoding of base-64 encoding of the DER OCSPRequest}``."""
    current = runtime()
    limit = current.config.max_body_bytes
    der = decode_get_request(encoded) if len(encoded) <= limit * 4 // 3 + 4 else b""
    return _reply(current.ocsp.respond(der))


bp.add_url_rule("/ocsp", view_func=ocsp_post, methods=["POST"])
bp.add_url_rule("/ocsp/", endpoint="ocsp_post_slash", view_func=ocsp_post, methods=["POST"])
# Base64 holds '/' and may hold '//', which must not be merged into one slash.
bp.add_url_rule("/ocsp/<path:encoded>", view_func=ocsp_get, methods=["GET"], merge_slashes=False)


def decode_get_request(encoded: str) -> bytes:
    """The DER of a GET request's path; empty (so malformedRequest) when it is not base64.

    The server has URL-decoded the path once; clients that encoded twice leave ``%2B`` and the like,
    decoded here (base64 has no ``%``). URL-safe base64 and missing padding are accepted.
    """
    text = unquote(encoded) if "%" in encoded else encoded
    if _NOT_BASE64.search(text):
        return b""
    text = text.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _reply(answer: OcspAnswer) -> Response:
    response = Response(answer.der, mimetype=OCSP_RESPONSE)
    if answer.max_age is None or answer.produced_at is None or answer.next_update is None:
        response.headers["Cache-Control"] = "no-store"
        return response
    # RFC 5019 §6.2: max-age no later than nextUpdate; the validators let caches revalidate cheaply.
    response.headers["Cache-Control"] = f"max-age={answer.max_age}, public, no-transform, must-revalidate"
    response.headers["Last-Modified"] = http_date(answer.produced_at)
    response.headers["Expires"] = http_date(answer.next_update)
    response.headers["ETag"] = f'"{hashlib.sha256(answer.der).hexdigest()[:32]}"'
    return response
