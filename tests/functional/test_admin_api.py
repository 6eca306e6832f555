"""The admin API: off without a token, bearer-protected, revocations visible to OCSP at once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from scep_server.config import SecretSource

from .conftest import Device, ScepTestServer, make_config, serving

TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[ScepTestServer]:
    with serving(replace(make_config(tmp_path), admin_token=SecretSource(value=TOKEN))) as started:
        yield started


def test_admin_api_is_off_without_a_token(server: ScepTestServer) -> None:
    assert server.http.get("/admin/certificates").status_code == 404


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN + "x"}])
def test_admin_api_needs_the_token(admin_server: ScepTestServer, headers: dict[str, str]) -> None:
    assert admin_server.http.get("/admin/certificates", headers=headers).status_code == 401


def test_list_show_and_revoke(admin_server: ScepTestServer) -> None:
    cert = admin_server.enroll(Device(common_name="managed"))
    serial = f"{cert.serial_number:x}"
    listing = admin_server.http.get("/admin/certificates", headers=AUTH).get_json()
    assert [c["serial"] for c in listing["certificates"]] == [serial]
    shown = admin_server.http.get(f"/admin/certificates/{serial}", headers=AUTH).get_json()
    assert shown["subject"] == "CN=managed" and shown["status"] == "valid"

    revoked = admin_server.http.post(f"/admin/certificates/{serial}/revoke", json={"reason": "keyCompromise"},
                                     headers=AUTH)
    assert revoked.status_code == 200 and revoked.get_json()["revocation_reason"] == 1
    again = admin_server.http.post(f"/admin/certificates/{serial}/revoke", json={}, headers=AUTH)
    assert again.status_code == 409

    request = ocsp.OCSPRequestBuilder().add_certificate(cert, admin_server.ca.ca_cert, hashes.SHA256()).build()
    answer = admin_server.http.post("/ocsp", data=request.public_bytes(serialization.Encoding.DER),
                                    headers={"Content-Type": "application/ocsp-request"})
    assert ocsp.load_der_ocsp_response(answer.data).certificate_status is ocsp.OCSPCertStatus.REVOKED


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/admin/certificates/zz/revoke", {}, 400),
        ("/admin/certificates/abcdef/revoke", {}, 404),
        ("/admin/certificates/abcdef/revoke", {"reason": "removeFromCRL"}, 400),
    ],
)
def test_revoke_errors(admin_server: ScepTestServer, path: str, body: dict[str, str], status: int) -> None:
    if "removeFromCRL" in str(body):
        cert = admin_server.enroll(Device(common_name="x"))
        path = f"/admin/certificates/{cert.serial_number:x}/revoke"
    assert admin_server.http.post(path, json=body, headers=AUTH).status_code == status


def test_list_validates_its_parameters(admin_server: ScepTestServer) -> None:
    assert admin_server.http.get("/admin/certificates?status=odd", headers=AUTH).status_code == 400
    assert admin_server.http.get("/admin/certificates?limit=0", headers=AUTH).status_code == 400
