"""Request ids: one per HTTP request, in its log records, its access log line and its response.

A request keeps the id its client (or a proxy in front) sent in ``X-Request-Id`` when that is a sane
token: 1 to 128 characters of ``A-Z a-z 0-9 . _ -``. Anything else, or none, gets a new random id, so
a header cannot smuggle text into the logs. The id is answered in the response's ``X-Request-Id``,
bound to the log context (:func:`scep_server.logs.log_context`) while the request is answered, its
body included, and left in the WSGI environ for gunicorn's access log.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from werkzeug.wsgi import ClosingIterator

from scep_server import logs

if TYPE_CHECKING:
    from types import TracebackType
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    OptExcInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]

__all__ = ["ENVIRON_KEY", "REQUEST_ID_HEADER", "RequestIds", "request_id_from"]

REQUEST_ID_HEADER = "X-Request-Id"
ENVIRON_KEY = "scep_server.request_id"  # the request's id in the WSGI environ
_SANE = re.compile(r"[A-Za-z0-9._-]{1,128}")


def request_id_from(header: str | None) -> str:
    """The header's id when it is a sane token, else a new one (32 hex digits)."""
    if header is not None and _SANE.fullmatch(header):
        return header
    return uuid.uuid4().hex


class RequestIds:
    """WSGI middleware, outermost: gives each request its id (see the module docstring)."""

    def __init__(self, app: WSGIApplication) -> None:
        self._app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        environ[ENVIRON_KEY] = request_id
        token = logs.fresh_context(request_id=request_id)

        def start_with_id(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None, /
        ) -> Callable[[bytes], object]:
            kept = [(name, value) for name, value in headers if name.lower() != "x-request-id"]
            return start_response(status, [*kept, (REQUEST_ID_HEADER, request_id)], exc_info)

        try:
            body = self._app(environ, start_with_id)
        except BaseException:
            logs.unbind(token)
            raise
        return ClosingIterator(body, lambda: logs.unbind(token))
