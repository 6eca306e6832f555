"""The OCSP responder over HTTP (RFC 6960 Appendix A; GET and caching as in RFC 5019 §5 and §6).

``POST /ocsp`` takes the DER request as the body (``application/ocsp-request``); ``GET /ocsp/<base64>``
carries it base64-encoded (then URL-encoded) in the path. Every answer is HTTP 200 with an
``application/ocsp-response``, errors included: the OCSP status tells malformedRequest, unauthorized
and tryLater apart. Successful responses may be cached by HTTP caches until their nextUpdate.

:class:`CachedAnswers` sits in front of the Flask app: a request whose answer the responder keeps
(:meth:`OcspService.cached`, looked up by the request bytes) is answered there, with the same headers,
without Flask building a request; everything else, misses included, goes through the views below.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import re
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import unquote

from flask import Blueprint, Response, request
from werkzeug.http import http_date

from scep_server.service.ocsp import OcspAnswer, OcspService
from scep_server.web import errors
from scep_server.web.context import runtime

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

bp = Blueprint("ocsp", __name__)

OCSP_RESPONSE = "application/ocsp-response"
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=_-]")
# What a GET path may hold to be looked up before Flask routes it: base64 (either alphabet) and the '%'
# of a twice-encoded one, not starting with '/' (which the view's path converter would not take).
_GET_PATH = re.compile(r"[A-Za-z0-9+=_%-][A-Za-z0-9+/=_%-]*")
_CACHEABLE = ", public, no-transform, must-revalidate"
_VALIDATORS_KEPT = 1024  # the answers served last keep their fixed headers; others only compute them again


def ocsp_post() -> Response:
    """RFC 6960 A.1: the request is the body, whatever Content-Type the client sent."""
    return _reply(runtime().ocsp.respond(request.get_data(cache=False)))


def ocsp_get(encoded: str) -> Response:
    """RFC 6960 A.1: ``GET {url}/{url-encoding of base-64 encoding of the DER OCSPRequest}``."""
    current = runtime()
    return _reply(current.ocsp.respond(get_request_der(encoded, current.config.max_body_bytes)))


bp.add_url_rule("/ocsp", view_func=ocsp_post, methods=["POST"])
bp.add_url_rule("/ocsp/", endpoint="ocsp_post_slash", view_func=ocsp_post, methods=["POST"])
# Base64 holds '/' and may hold '//', which must not be merged into one slash.
bp.add_url_rule("/ocsp/<path:encoded>", view_func=ocsp_get, methods=["GET"], merge_slashes=False)


def get_request_der(encoded: str, max_body_bytes: int) -> bytes:
    """The DER of a GET request's path, or empty when it is longer than a POSTed body may be."""
    return decode_get_request(encoded) if len(encoded) <= max_body_bytes * 4 // 3 + 4 else b""


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
    return Response(answer.der, headers=reply_headers(answer))


def reply_headers(answer: OcspAnswer) -> list[tuple[str, str]]:
    """Content-Type, Content-Length and the caching headers of ``answer``."""
    headers = [("Content-Type", OCSP_RESPONSE), ("Content-Length", str(len(answer.der)))]
    if answer.max_age is None or answer.produced_at is None or answer.next_update is None:
        headers.append(("Cache-Control", "no-store"))
        return headers
    # RFC 5019 §6.2: max-age no later than nextUpdate; the validators let caches revalidate cheaply.
    headers.append(("Cache-Control", f"max-age={answer.max_age}{_CACHEABLE}"))
    headers += _validators(answer.der, answer.produced_at, answer.next_update)
    return headers


@functools.lru_cache(maxsize=_VALIDATORS_KEPT)
def _validators(der: bytes, produced_at: datetime, next_update: datetime) -> tuple[tuple[str, str], ...]:
    return (
        ("Last-Modified", http_date(produced_at)),
        ("Expires", http_date(next_update)),
        ("ETag", f'"{hashlib.sha256(der).hexdigest()[:32]}"'),
    )


class CachedAnswers:
    """WSGI middleware: ``POST /ocsp`` and ``GET /ocsp/<base64>`` answered from the responder's cache.

    Only what the views would read is looked at (the body, or the path), and only when Flask would take
    the request as it is: a body of a plain Content-Length within ``max_body_bytes``, a GET path of
    base64 characters. A miss passes the request on to ``app`` with the body it read, so a miss, an
    error and every other request get exactly the views' answers.
    """

    def __init__(self, app: WSGIApplication, responder: OcspService, max_body_bytes: int) -> None:
        self._app = app
        self._responder = responder
        self._max_body_bytes = max_body_bytes

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            der = self._request_der(environ)
        except Exception as exc:  # what the app's one error handler answers (reading the body may fail)
            return errors.handle(exc)(environ, start_response)
        answer = self._responder.cached(der) if der else None
        if answer is None:
            return self._app(environ, start_response)
        start_response("200 OK", reply_headers(answer))
        return [answer.der]

    def _request_der(self, environ: WSGIEnvironment) -> bytes | None:
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO", "")
        if method == "POST" and path in ("/ocsp", "/ocsp/"):
            return self._posted(environ)
        if method == "GET" and path.startswith("/ocsp/") and _GET_PATH.fullmatch(path, 6):
            return get_request_der(path[6:], self._max_body_bytes)
        return None

    def _posted(self, environ: WSGIEnvironment) -> bytes | None:
        length = environ.get("CONTENT_LENGTH", "")
        if "HTTP_TRANSFER_ENCODING" in environ or not (length.isascii() and length.isdigit()):
            return None
        if int(length) > self._max_body_bytes:
            return None  # the app answers 413
        der: bytes = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(der)  # for the view, should the answer not be kept
        return der
