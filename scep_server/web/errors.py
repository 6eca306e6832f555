"""The one place where an exception becomes an HTTP answer (errors.py draws the tree it maps).

A ``PKIFailure`` never gets here: it is answered inside the protocol with a signed CertRep FAILURE.
What does: a request no CertRep can answer (400/413), a refused operator input (400), something that
does not exist (404) or whose state does not allow the change (409) — never an outage —, a dependency or
the store failing (503 with Retry-After: the ``Unavailable`` branch, and ``StoreError``), Flask's own HTTP
errors (404, 405, ...), and the unexpected (500, logged with its traceback). Answers are one line of plain
text and never carry secrets.
"""

from __future__ import annotations

import functools
import logging

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from scep_server.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    RequestError,
    StoreError,
    StoreUnavailable,
    Unavailable,
)
from scep_server.service.revocation import REASON_NAMES, UnknownRevocationReason

log = logging.getLogger("scep_server.web")

__all__ = ["handle", "register"]

STORE_RETRY_AFTER = 30  # seconds
UPSTREAM_RETRY_AFTER = 30  # when the dependency named no Retry-After of its own


def register(app: Flask) -> None:
    """Route every exception a view raises through :func:`handle`."""
    app.register_error_handler(Exception, handle)


@functools.singledispatch
def handle(exc: Exception) -> Response:
    """The HTTP answer to ``exc``, by the most specific type registered below; the unexpected is a 500."""
    log.exception("unexpected error", exc_info=exc)
    return text(500, "internal error")


def text(status: int, body: str, headers: dict[str, str] | None = None) -> Response:
    """A one-line plain-text answer."""
    return Response(body + "\n", status=status, mimetype="text/plain", headers=headers)


@handle.register
def _http_error(exc: HTTPException) -> Response:
    return text(exc.code or 500, exc.description or exc.name)


@handle.register
def _request_error(exc: RequestError) -> Response:
    log.warning("rejected request: %s", exc)
    return text(exc.status_code, str(exc))


@handle.register
def _unknown_reason(exc: UnknownRevocationReason) -> Response:
    log.warning("rejected request: %s", exc)
    return text(400, f"reason must be one of {', '.join(REASON_NAMES)}")


@handle.register
def _invalid_input(exc: InvalidInput) -> Response:
    log.warning("rejected request: %s", exc)
    return text(400, str(exc))


@handle.register
def _not_found(exc: NotFound) -> Response:
    return text(404, str(exc) or "not found")


@handle.register
def _conflict(exc: Conflict) -> Response:
    log.info("conflict: %s", exc)
    return text(409, str(exc) or "conflict")


@handle.register
def _unavailable(exc: Unavailable) -> Response:
    log.error("dependency unavailable: %s", exc.detail)
    retry_after = int(exc.retry_after or UPSTREAM_RETRY_AFTER)
    return text(503, "service temporarily unavailable", {"Retry-After": str(retry_after)})


@handle.register
def _store_unavailable(exc: StoreUnavailable) -> Response:
    log.error("store unavailable: %s", exc)
    retry_after = int(exc.retry_after or STORE_RETRY_AFTER)
    return text(503, "service temporarily unavailable", {"Retry-After": str(retry_after)})


@handle.register
def _store_error(exc: StoreError) -> Response:
    log.error("store failure: %s", exc)
    return text(503, "service temporarily unavailable", {"Retry-After": str(STORE_RETRY_AFTER)})
