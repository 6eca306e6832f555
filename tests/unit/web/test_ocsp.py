"""CachedAnswers: which requests it looks up before Flask, and that everything else reaches the app unchanged."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from cryptography.x509 import ocsp

from scep_server.service.ocsp import OcspAnswer, OcspResponder
from scep_server.web.ocsp import CachedAnswers

LIMIT = 4096
REQUEST = b"\x30\x0a" + b"r" * 10
KEPT = OcspAnswer(b"signed answer", ocsp.OCSPResponseStatus.SUCCESSFUL, datetime(2026, 1, 1, tzinfo=UTC),
                  datetime(2026, 1, 1, 1, tzinfo=UTC), 3000)  # fmt: skip


class Responder:
    """Keeps one answer, for REQUEST; notes every lookup."""

    def __init__(self) -> None:
        self.asked: list[bytes] = []

    def cached(self, der: bytes) -> OcspAnswer | None:
        self.asked.append(der)
        return KEPT if der == REQUEST else None


class App:
    """The Flask app behind: notes the body it would read."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.bodies.append(environ["wsgi.input"].read())
        start_response("204 No Content", [])
        return [b""]


def call(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes, App, Responder]:
    app, responder, started = App(), Responder(), []
    wsgi = CachedAnswers(app, cast(OcspResponder, responder), LIMIT)
    start: Any = lambda status, headers, exc_info=None: started.append((status, headers))  # noqa: E731
    body = b"".join(wsgi(environ, start))
    status, headers = started[0]
    return status, headers, body, app, responder


def post(body: bytes, path: str = "/ocsp", **extra: str) -> dict[str, Any]:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": path, "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body), **extra}  # fmt: skip


def get(path: str) -> dict[str, Any]:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.input": io.BytesIO(b"")}


@pytest.mark.parametrize(
    "environ",
    [post(REQUEST), post(REQUEST, "/ocsp/"), get("/ocsp/" + base64.b64encode(REQUEST).decode()),
     get("/ocsp/" + base64.urlsafe_b64encode(REQUEST).decode().rstrip("="))],
    ids=["POST", "POST slash", "GET", "GET url-safe"],
)  # fmt: skip
def test_a_kept_answer_is_served_without_the_app(environ: dict[str, Any]) -> None:
    status, headers, body, app, _ = call(environ)
    assert status == "200 OK" and body == KEPT.der and app.bodies == []
    fields = dict(headers)
    assert fields["Content-Type"] == "application/ocsp-response"
    assert fields["Content-Length"] == str(len(KEPT.der))
    assert fields["Cache-Control"] == "max-age=3000, public, no-transform, must-revalidate"
    assert fields["Last-Modified"] == "Thu, 01 Jan 2026 00:00:00 GMT"
    assert fields["Expires"] == "Thu, 01 Jan 2026 01:00:00 GMT"
    assert fields["ETag"].startswith('"') and len(fields["ETag"]) == 34


def test_a_miss_reaches_the_app_with_the_body_it_sent() -> None:
    other = REQUEST[:-1] + b"s"
    status, _, _, app, responder = call(post(other))
    assert status == "204 No Content" and app.bodies == [other] and responder.asked == [other]


@pytest.mark.parametrize(
    "environ",
    [
        post(REQUEST, HTTP_TRANSFER_ENCODING="chunked"),
        post(REQUEST, CONTENT_LENGTH=""),
        post(REQUEST, CONTENT_LENGTH="+12"),
        post(REQUEST, CONTENT_LENGTH="１２"),
        post(REQUEST, CONTENT_LENGTH=str(LIMIT + 1)),
        post(REQUEST, "/ocsp/x"),
        {**post(REQUEST), "REQUEST_METHOD": "PUT"},
        {**get("/ocsp/" + base64.b64encode(REQUEST).decode()), "REQUEST_METHOD": "HEAD"},
        get("/ocsp"),
        get("/ocsp/"),
        get("/ocsp//" + base64.b64encode(REQUEST).decode()),
        get("/ocsp/not*base64"),
        get("/ocsp/" + "A" * (LIMIT * 2)),
    ],
    ids=["chunked", "no length", "signed length", "non-ASCII digits", "over the limit", "POST with a path", "PUT",
         "HEAD", "GET without a request", "GET empty", "GET leading slash", "GET not base64", "GET too long"],
)  # fmt: skip
def test_what_the_views_would_not_take_as_it_is_goes_to_the_app_untouched(environ: dict[str, Any]) -> None:
    sent = environ["wsgi.input"].getvalue()
    status, _, _, app, responder = call(environ)
    assert status == "204 No Content" and app.bodies == [sent] and responder.asked == []


def test_an_unreadable_body_is_answered_as_the_error_handler_answers() -> None:
    class Broken(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise TimeoutError("the client stopped sending")

    status, headers, body, app, _ = call({**post(REQUEST), "wsgi.input": Broken()})
    assert status.startswith("500") and body == b"internal error\n" and app.bodies == []
    assert ("Content-Type", "text/plain; charset=utf-8") in headers

