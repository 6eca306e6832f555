"""The container's health check asks /livez where SCEP_SERVER_BIND says the server listens."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scep_server import healthcheck


@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("0.0.0.0:8080", "http://127.0.0.1:8080/livez"),
        (":9000", "http://127.0.0.1:9000/livez"),
        ("[::]:8443", "http://[::1]:8443/livez"),
        ("10.1.2.3:8080", "http://10.1.2.3:8080/livez"),
        ("[2001:db8::1]:8080", "http://[2001:db8::1]:8080/livez"),
    ],
)
def test_the_probe_follows_the_bind_address(bind: str, url: str) -> None:
    assert healthcheck.probe_url(bind) == url


@pytest.mark.parametrize("bind", ["unix:/run/scep.sock", "8080", "host:", "host:http", "host:70000"])
def test_a_bind_address_without_a_port_is_refused(bind: str) -> None:
    with pytest.raises(ValueError, match="SCEP_SERVER_BIND"):
        healthcheck.probe_url(bind)


class _Answer(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self.send_response(self.status if self.path == "/livez" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def listening() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_exit_0_when_livez_answers_200_and_1_otherwise(
    listening: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = listening.server_address[1]
    monkeypatch.setenv("SCEP_SERVER_BIND", f"0.0.0.0:{port}")
    assert healthcheck.main() == 0
    monkeypatch.setattr(_Answer, "status", 503)
    assert healthcheck.main() == 1
    assert "answered 503" in capsys.readouterr().err
    listening.shutdown()
    listening.server_close()
    assert healthcheck.main() == 1
