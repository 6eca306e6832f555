"""The SCEP HTTP transport (scep_server/simulator/http.py) over a fake adapter: no sockets."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from scep_server.scep import cms
from scep_server.simulator.http import ScepHttpClient, ScepHttpError
from tests.support.pki import CA, shared_key


class FakeAdapter(requests.adapters.BaseAdapter):
    """Answers every request with a canned response and records what was sent."""

    def __init__(self, status: int = 200, body: bytes = b"", content_type: str = "", error: bool = False) -> None:
        super().__init__()
        self.status, self.body, self.content_type, self.error = status, body, content_type, error
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
        self.sent.append(request)
        if self.error:
            raise requests.ConnectionError("connection refused")
        response = requests.Response()
        response.status_code = self.status
        response._content = self.body
        response.headers["Content-Type"] = self.content_type
        response.request = request
        response.url = request.url or ""
        return response

    def close(self) -> None:
        pass


def _client(adapter: FakeAdapter) -> ScepHttpClient:
    session = requests.Session()
    session.mount("http://", adapter)
    return ScepHttpClient("http://127.0.0.1:9/scep", session=session, timeout=3)


def _query(request: requests.PreparedRequest) -> dict[str, list[str]]:
    return parse_qs(urlsplit(request.url or "").query, keep_blank_values=True)


def test_http_get_ca_caps() -> None:
    adapter = FakeAdapter(body=b"AES\r\nSHA-256\r\n", content_type="text/plain")
    assert _client(adapter).get_ca_caps() == {"AES", "SHA-256"}
    assert adapter.sent[0].method == "GET"
    assert _query(adapter.sent[0]) == {"operation": ["GetCACaps"]}


def test_http_get_ca_caps_error_means_none() -> None:
    assert _client(FakeAdapter(status=404, body=b"nope")).get_ca_caps() == frozenset()


def test_http_get_ca_cert() -> None:
    ca = CA.root("Test CA")
    ra = ca.issue("Test RA", key=shared_key()).cert
    adapter = FakeAdapter(body=cms.certs_only([ra, ca.cert]), content_type="application/x-x509-ca-ra-cert")
    assert _client(adapter).get_ca_cert("default") == [ra, ca.cert]
    assert _query(adapter.sent[0]) == {"operation": ["GetCACert"], "message": ["default"]}


def test_http_pki_operation_post() -> None:
    adapter = FakeAdapter(body=b"reply", content_type="application/x-pki-message")
    assert _client(adapter).pki_operation(b"\x30\x00+/") == b"reply"
    sent = adapter.sent[0]
    assert sent.method == "POST"
    assert sent.body == b"\x30\x00+/"
    assert sent.headers["Content-Type"] == "application/x-pki-message"
    assert _query(sent) == {"operation": ["PKIOperation"]}


def test_http_pki_operation_get_escapes_base64() -> None:
    der = bytes(range(256)) * 3  # base64 of this holds '+', '/' and '=' padding
    adapter = FakeAdapter(body=b"reply")
    assert _client(adapter).pki_operation(der, method="GET") == b"reply"
    sent = adapter.sent[0]
    raw_query = urlsplit(sent.url or "").query
    assert "+" not in raw_query and "/" not in raw_query
    assert sent.method == "GET"
    assert base64.b64decode(_query(sent)["message"][0]) == der


def test_http_pki_operation_errors() -> None:
    with pytest.raises(ScepHttpError) as info:
        _client(FakeAdapter(status=500, body=b"E" * 500)).pki_operation(b"x")
    assert info.value.status_code == 500
    assert info.value.body == "E" * 200
    assert "HTTP 500" in str(info.value)
    with pytest.raises(ScepHttpError) as info:
        _client(FakeAdapter(error=True)).pki_operation(b"x")
    assert info.value.status_code is None
    with pytest.raises(ValueError, match="POST or GET"):
        _client(FakeAdapter()).pki_operation(b"x", method="PUT")


def test_http_client_closes_only_its_own_session() -> None:
    with ScepHttpClient("http://127.0.0.1:9/scep") as own:
        assert isinstance(own.session, requests.Session)
    adapter = FakeAdapter()
    client = _client(adapter)
    client.close()
    assert client.session.adapters["http://"] is adapter
