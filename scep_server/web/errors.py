"""The one place where an exception becomes an HTTP answer (errors.py draws the tree it maps).

A ``PKIFailure`` never gets here: it is answered inside the protocol with a signed CertRep FAILURE.
What does: a request no CertRep can answer (400/413), a refused operator input (400), something that
does not exist (404) or whose state does not allow the change (409) — never an outage —, a dependency or
the store failing (503 with Retry-After: the ``Unavailable`` branch, and ``StoreError``), Flask's own HTTP
errors (404, 405, ...), and the unexpected (500, logged with its traceback). Answers never carry secrets.

Under ``/api/`` an answer is JSON, ``{"error": {"code": "<snake_case>", "message": "..."}}`` (see
:func:`problem`); everywhere else it is one line of plain text. Both keep the headers the error calls for
(``WWW-Authenticate`` on a 401, ``Allow`` on a 405, ``Retry-After`` on a 503).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from flask import Flask, Response, has_request_context, json, request
from werkzeug.exceptions import HTTPException

from scep_server.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RequestError,
    StoreError,
    StoreUnavailable,
    Unavailable,
)
from scep_server.service.revocation import REASON_NAMES, UnknownRevocationReason

log = logging.getLogger("scep_server.web")

__all__ = ["API_PREFIX", "ERROR_CODES", "handle", "problem", "register", "text"]

STORE_RETRY_AFTER = 30  # seconds
UPSTREAM_RETRY_AFTER = 30  # when the dependency named no Retry-After of its own
API_PREFIX = "/api/"  # where errors are JSON
# The error codes a JSON answer carries, by HTTP status; other statuses take werkzeug's name in snake_case.
_STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "payload_too_large", 500: "internal", 503: "unavailable",
}
# Every code the API answers with (the OpenAPI document's enum of them).
ERROR_CODES = (
    "invalid_parameter", "unknown_parameter", "repeated_parameter", "invalid_body", *_STATUS_CODES.values(),
)
_HEADERS_KEPT = frozenset({"allow", "www-authenticate", "retry-after"})


@dataclass(frozen=True, slots=True)
class _Problem:
    status: int
    message: str
    code: str | None = None  # None: the status's code
    headers: dict[str, str] = field(default_factory=dict)


def register(app: Flask) -> None:
    """Route every exception a view raises through :func:`handle`."""
    app.register_error_handler(Exception, handle)


def handle(exc: Exception) -> Response:
    """The HTTP answer to ``exc``, by the most specific type registered below; the unexpected is a 500."""
    if isinstance(exc, HTTPException) and exc.response is not None:  # abort(response): answered already
        return exc.response  # type: ignore[return-value]
    answer = _problem_of(exc)
    if _wants_json():
        return problem(answer.status, answer.code or _code(answer.status), answer.message, answer.headers)
    return text(answer.status, answer.message, answer.headers)


def problem(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """A JSON error answer: ``{"error": {"code": code, "message": message}}``."""
    body = json.dumps({"error": {"code": code, "message": message}})
    return Response(body + "\n", status=status, mimetype="application/json", headers=headers)


def text(status: int, body: str, headers: dict[str, str] | None = None) -> Response:
    """A one-line plain-text answer."""
    return Response(body + "\n", status=status, mimetype="text/plain", headers=headers)


def _wants_json() -> bool:
    return has_request_context() and request.path.startswith(API_PREFIX)


def _code(status: int) -> str:
    return _STATUS_CODES.get(status, "error")


@functools.singledispatch
def _problem_of(exc: Exception) -> _Problem:
    log.exception("unexpected error", exc_info=exc)
    return _Problem(500, "internal error")


@_problem_of.register
def _http_error(exc: HTTPException) -> _Problem:
    status = exc.code or 500
    headers = {name: value for name, value in exc.get_headers() if name.lower() in _HEADERS_KEPT}
    code = _STATUS_CODES.get(status) or exc.name.lower().replace(" ", "_")
    return _Problem(status, exc.description or exc.name, code, headers)


@_problem_of.register
def _request_error(exc: RequestError) -> _Problem:
    log.warning("rejected request: %s", exc)
    return _Problem(exc.status_code, str(exc), "payload_too_large" if isinstance(exc, PayloadTooLarge) else None)


@_problem_of.register
def _unknown_reason(exc: UnknownRevocationReason) -> _Problem:
    log.warning("rejected request: %s", exc)
    return _Problem(400, f"reason must be one of {', '.join(REASON_NAMES)}", "invalid_body")


@_problem_of.register
def _invalid_input(exc: InvalidInput) -> _Problem:
    log.warning("rejected request: %s", exc)
    return _Problem(400, str(exc), "invalid_parameter")


@_problem_of.register
def _not_found(exc: NotFound) -> _Problem:
    return _Problem(404, str(exc) or "not found")


@_problem_of.register
def _conflict(exc: Conflict) -> _Problem:
    log.info("conflict: %s", exc)
    return _Problem(409, str(exc) or "conflict")


@_problem_of.register
def _unavailable(exc: Unavailable) -> _Problem:
    log.error("dependency unavailable: %s", exc.detail)
    retry_after = int(exc.retry_after or UPSTREAM_RETRY_AFTER)
    return _Problem(503, "service temporarily unavailable", headers={"Retry-After": str(retry_after)})


@_problem_of.register
def _store_unavailable(exc: StoreUnavailable) -> _Problem:
    log.error("store unavailable: %s", exc)
    retry_after = int(exc.retry_after or STORE_RETRY_AFTER)
    return _Problem(503, "service temporarily unavailable", headers={"Retry-After": str(retry_after)})


@_problem_of.register
def _store_error(exc: StoreError) -> _Problem:
    log.error("store failure: %s", exc)
    return _Problem(503, "service temporarily unavailable", headers={"Retry-After": str(STORE_RETRY_AFTER)})
