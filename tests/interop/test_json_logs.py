"""``log_format: json`` under ``scep-server serve``: gunicorn's error log, its access log and the application's
records are JSON objects, one per line, and a request's records carry the id its response echoes.

The lines before gunicorn starts come from the command line's own logging setup, which reads the
configuration's format only once it is loaded; the assertions start at gunicorn's first line.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from scep_server.scep import client
from tests.support.processes import HOST
from tests.support.servers import CHALLENGE, ScepServerProcess

pytestmark = pytest.mark.interop

CONFIG = f"""\
data_dir: var
log_format: json
ca:
  key_size: 2048
  key_passphrase: {{value: "json-logs-ca-passphrase"}}
profiles:
  default:
    challenge: {{type: static, secret: {{value: "{CHALLENGE}"}}}}
"""
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScepServerProcess]:
    root = tmp_path_factory.mktemp("json-logs")
    with ScepServerProcess(root, CONFIG, workers=2) as started:
        yield started


def _get(server: ScepServerProcess, path: str, **headers: str) -> requests.Response:
    url = server.base_url + path
    assert url.startswith(f"http://{HOST}:")
    with requests.Session() as session:
        session.trust_env = False
        return session.get(url, headers={"Connection": "close", **headers}, timeout=30)


def served_records(server: ScepServerProcess) -> list[dict[str, Any]]:
    """Every line from gunicorn's start on, each parsed as the JSON object it must be."""
    lines = server.log_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "Starting gunicorn" in line)
    return [json.loads(line) for line in lines[start:]]


def records_of(server: ScepServerProcess, request_id: str, count: int) -> list[dict[str, Any]]:
    """The records carrying ``request_id``, once there are ``count`` of them (the access line comes last)."""
    deadline = time.monotonic() + 10
    while True:
        found = [record for record in served_records(server) if record.get("request_id") == request_id]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_an_accepted_request_id_is_echoed_and_logged(server: ScepServerProcess) -> None:
    response = _get(server, "/scep?operation=GetCACaps", **{"X-Request-Id": "Req-1.a_b"})
    assert response.status_code == 200 and response.headers["X-Request-Id"] == "Req-1.a_b"
    (access,) = records_of(server, "Req-1.a_b", 1)
    assert access["logger"] == "gunicorn.access" and access["level"] == "INFO"
    assert ISO_UTC.match(access["time"]), access
    assert (access["method"], access["path"], access["status"]) == ("GET", "/scep?operation=GetCACaps", 200)
    assert access["bytes"] == len(response.content) and access["profile"] == "default"
    assert access["remote_addr"] == "127.0.0.1" and access["duration_ms"] >= 0
    assert access["message"] == '"GET /scep?operation=GetCACaps HTTP/1.1" 200'


@pytest.mark.parametrize("sent", ["has spaces", "x" * 129, "semi;colon", "ünïcode"])
def test_an_unusable_request_id_is_replaced_by_a_new_one(server: ScepServerProcess, sent: str) -> None:
    response = _get(server, "/scep?operation=NoSuchOperation", **{"X-Request-Id": sent})
    assert response.status_code == 400
    request_id = response.headers["X-Request-Id"]
    assert GENERATED_ID.match(request_id), request_id
    records = {record["logger"]: record for record in records_of(server, request_id, 2)}
    app, access = records["scep_server.web"], records["gunicorn.access"]
    assert app["level"] == "WARNING" and ISO_UTC.match(app["time"])
    assert app["message"] == "rejected request: unsupported operation 'NoSuchOperation'"
    assert app["profile"] == "default"
    assert access["status"] == 400 and access["path"] == "/scep?operation=NoSuchOperation"
    assert sent not in server.log_text()


def test_the_access_log_keeps_no_scep_message(server: ScepServerProcess) -> None:
    message = base64.b64encode(b"0\x82\x01\x00" + b"not really a pkiMessage" * 8).decode()
    response = _get(server, f"/scep?operation=PKIOperation&message={message}", **{"X-Request-Id": "pki-get"})
    assert response.status_code == 400
    records = records_of(server, "pki-get", 2)
    assert records[-1]["path"] == "/scep?operation=PKIOperation"
    assert not any(message[:24] in line for line in server.log_text().splitlines())


def test_every_line_is_one_json_object_with_control_characters_escaped(server: ScepServerProcess) -> None:
    # A tab is the one control character an HTTP header field may carry inside its value.
    response = _get(server, "/scep?operation=Get%0D%0ACACaps", **{"X-Request-Id": "ctl", "User-Agent": "agent\tx"})
    assert response.status_code == 400
    app, access = sorted(records_of(server, "ctl", 2), key=lambda record: record["logger"] == "gunicorn.access")
    assert app["message"] == "rejected request: unsupported operation 'Get\\r\\nCACaps'"
    assert access["user_agent"] == "agent\\tx" and access["path"] == "/scep?operation=Get%0D%0ACACaps"
    records = served_records(server)
    assert {"gunicorn.error", "gunicorn.access"} <= {record["logger"] for record in records}
    assert any(record["logger"].startswith("scep_server.") for record in records)
    for record in records:
        assert {"time", "level", "logger", "message", "process"} <= set(record), record
        assert ISO_UTC.match(record["time"]), record
    assert "\t" not in server.log_text()


def test_a_pkioperations_records_carry_its_transaction_id(server: ScepServerProcess) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "json-logs-device")])
    built = client.build_pkcsreq(
        client.build_csr(key, subject, challenge_password="not-the-challenge"),
        signer_cert=client.self_signed_signer(key, subject), signer_key=key,
        recipient=x509.load_pem_x509_certificate(server.ra_pem_path.read_bytes()),
    )  # fmt: skip
    url = server.url(path="/scep") + "?operation=PKIOperation"
    with requests.Session() as session:
        session.trust_env = False
        response = session.post(url, data=built.der, headers={"X-Request-Id": "pki-post"}, timeout=30)
    assert response.status_code == 200
    records = {record["logger"]: record for record in records_of(server, "pki-post", 2)}
    app = records["scep_server.scep"]
    assert app["transaction_id"] == built.transaction_id and app["profile"] == "default"
    assert "FAILURE" in app["message"] and app["level"] == "WARNING"
