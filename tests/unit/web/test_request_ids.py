"""Request ids: taken from a sane X-Request-Id or made, echoed, and in the log context until the body is done."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Response

from scep_server import logs
from scep_server.web.request_ids import ENVIRON_KEY, RequestIds, request_id_from

GENERATED = re.compile(r"^[0-9a-f]{32}$")


@pytest.mark.parametrize("header", ["a", "Req-1.a_b", "x" * 128, "0123456789abcdef0123456789abcdef"])
def test_a_sane_token_is_kept(header: str) -> None:
    assert request_id_from(header) == header


@pytest.mark.parametrize("header", [None, "", "x" * 129, "has space", "semi;colon", "new\nline", "ü", "a/b", "a\x00"])
def test_anything_else_gets_a_new_id(header: str | None) -> None:
    made = request_id_from(header)
    assert GENERATED.match(made) and made != header
    assert request_id_from(header) != made  # a new one each time


class Seen:
    """What the wrapped app saw: the environ's id and the log context, while answering and while streaming."""

    def __init__(self) -> None:
        self.environ_id: str | None = None
        self.answering: dict[str, str] = {}
        self.streaming: dict[str, str] = {}

    def app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.environ_id = environ[ENVIRON_KEY]
        self.answering = dict(logs.current_context())
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Request-Id", "from-the-app")])
        return self._body()

    def _body(self) -> Iterator[bytes]:
        self.streaming = dict(logs.current_context())
        yield b"ok"


def test_the_id_is_echoed_bound_while_answering_and_dropped_after() -> None:
    seen = Seen()
    response = Client(RequestIds(seen.app)).get("/", headers={"X-Request-Id": "abc.1"})
    assert response.headers.getlist("X-Request-Id") == ["abc.1"]  # the app's own is replaced
    assert response.get_data() == b"ok"
    assert seen.environ_id == "abc.1"
    assert seen.answering == {"request_id": "abc.1"} and seen.streaming == {"request_id": "abc.1"}
    assert dict(logs.current_context()) == {"request_id": "abc.1"}  # until the server closes the body
    response.close()
    assert dict(logs.current_context()) == {}


def test_a_made_id_is_the_one_echoed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        logging.getLogger("scep_server.test").warning("inside")
        return Response("fine")(environ, start_response)

    caplog.handler.addFilter(logs.ContextFilter())
    response = Client(RequestIds(app)).get("/", headers={"X-Request-Id": "not a token"})
    response.close()
    echoed = response.headers["X-Request-Id"]
    assert GENERATED.match(echoed)
    (record,) = [r for r in caplog.records if r.getMessage() == "inside"]
    assert record.request_id == echoed  # type: ignore[attr-defined]


def test_a_failing_app_leaves_no_context_behind() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        Client(RequestIds(app)).get("/")
    assert dict(logs.current_context()) == {}


def test_concurrent_requests_keep_their_own_ids() -> None:
    gate = threading.Barrier(2, timeout=5)
    seen: dict[str, str] = {}

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        gate.wait()  # both requests are inside at once
        seen[environ[ENVIRON_KEY]] = logs.current_context()["request_id"]
        return Response("ok")(environ, start_response)

    client = Client(RequestIds(app))

    def request(name: str) -> None:
        client.get("/", headers={"X-Request-Id": name}).close()

    threads = [threading.Thread(target=request, args=(name,)) for name in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert seen == {"one": "one", "two": "two"}
