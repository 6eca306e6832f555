"""The admin API (JSON under /admin/)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey as RSAKey
from flask.testing import FlaskClient

from scep_server.emulator import IntuneEmulator, create_app
from scep_server.intune.contract import ChallengeSpec

from .helpers import GRAPH_SCOPE, csr_for, pem_cert, self_signed, token

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
def admin(emulator: IntuneEmulator) -> FlaskClient:
    return create_app(emulator, admin_token="admin-secret").test_client()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic admin-secret"}])
def test_admin_token_is_required(admin: FlaskClient, headers: dict[str, str]) -> None:
    response = admin.get("/admin/counters", headers=headers)
    assert response.status_code == 401 and response.json is not None and "error" in response.json
    assert admin.get("/admin/counters", headers=ADMIN).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}])
def test_finding10_admin_api_is_never_open_without_a_token(client: FlaskClient, headers: dict[str, str]) -> None:
    assert client.get("/admin/counters", headers=headers).status_code == 401
    assert client.post("/admin/apps", json={"clientId": "x", "clientSecret": "y"}, headers=headers).status_code == 401


def test_admin_token_does_not_guard_the_emulated_services(admin: FlaskClient) -> None:
    assert admin.get("/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration").status_code == 200


def test_challenges_and_validations(admin: FlaskClient, emulator: IntuneEmulator, device_key: RSAKey) -> None:
    spec_json = {"subject": "CN=alice@contoso.com", "sans": [{"type": "upn", "value": "alice@contoso.com"}],
                 "extendedKeyUsage": ["client_auth"]}
    response = admin.post("/admin/challenges", json=spec_json, headers=ADMIN)
    assert response.status_code == 201 and response.json is not None
    spec = ChallengeSpec.from_json(response.json["spec"])
    assert spec.extended_key_usage == ("1.3.6.1.5.5.7.3.2",)
    emulator.validate("tid-1", csr_for(spec, device_key, response.json["challenge"]))
    validations = admin.get("/admin/validations", headers=ADMIN).json
    assert validations is not None and validations["value"][0]["code"] == "Success"
    assert admin.post("/admin/untarget", json={"certificateRequestId": spec.certificate_request_id},
                      headers=ADMIN).status_code == 204
    emulator.validate("tid-1", csr_for(spec, device_key, response.json["challenge"]))
    assert emulator.validations[-1]["code"] == "ScepProfileNoLongerTargetedToTheClient"


@pytest.mark.parametrize(("path", "body"), [
    ("/admin/challenges", {"subject": "nonsense"}),
    ("/admin/challenges", {"subject": "CN=a", "keySize": "big"}),
    ("/admin/challenges", ["CN=a"]),
    ("/admin/faults", {"endpoint": "validateRequest"}),
    ("/admin/faults", {"endpoint": "validateRequest", "status": 500, "colour": "red"}),
    ("/admin/faults", {"status": 500}),
    ("/admin/revocations", {"serials": [], "issuerName": "CN=CA"}),
    ("/admin/revocations", {"serials": ["01"]}),
    ("/admin/apps", {"clientId": "x"}),
    ("/admin/apps", {"clientId": "x", "certificate": "not pem"}),
    ("/admin/apps", {"clientId": "x", "clientSecret": "y", "intuneRoles": "scep_challenge_provider"}),
    ("/admin/services", {"providerName": "PkiConnectorFEService", "uri": "http://insecure"}),
    ("/admin/untarget", {}),
])
def test_malformed_admin_bodies(admin: FlaskClient, path: str, body: Any) -> None:
    response = admin.post(path, json=body, headers=ADMIN)
    assert response.status_code == 400 and response.json is not None and response.json["error"]


def test_faults_and_counters(admin: FlaskClient, emulator: IntuneEmulator) -> None:
    body = {"endpoint": "discovery", "status": 503, "retryAfter": 5, "times": 1, "latency": None}
    assert admin.post("/admin/faults", json=body, headers=ADMIN).status_code == 204
    faults = admin.get("/admin/faults", headers=ADMIN).json
    assert faults is not None and faults["discovery"]["status"] == 503 and faults["discovery"]["times"] == 1
    discovery = "/graph/v1.0/servicePrincipals/appId=0000000a-0000-0000-c000-000000000000/endpoints"
    assert admin.get(discovery).status_code == 503
    auth_fault = {"endpoint": "token", "authFailure": True}
    assert admin.post("/admin/faults", json=auth_fault, headers=ADMIN).status_code == 204
    assert admin.delete("/admin/faults", headers=ADMIN).status_code == 204
    assert emulator.faults() == {}
    counters = admin.get("/admin/counters", headers=ADMIN).json
    assert counters is not None and counters["discovery"] == 1 and counters["validateRequest"] == 0


def test_revocations(admin: FlaskClient, emulator: IntuneEmulator) -> None:
    response = admin.post("/admin/revocations", json={"serials": ["01", "02"], "issuerName": "CN=CA"}, headers=ADMIN)
    assert response.status_code == 201 and response.json is not None
    contexts = response.json["requestContexts"]
    assert [r["requestContext"] for r in emulator.download_revocations(10, None)] == contexts
    results = admin.get("/admin/revocation-results", headers=ADMIN).json
    assert results == {"value": []}


def test_apps_and_services(admin: FlaskClient, emulator: IntuneEmulator, app_key: RSAKey) -> None:
    app = {"clientId": "new-app", "clientSecret": "new-secret", "intuneRoles": []}
    assert admin.post("/admin/apps", json=app, headers=ADMIN).status_code == 201
    graph_token = token(admin, GRAPH_SCOPE, client_id="new-app", secret="new-secret")
    with_cert = {"clientId": "cert-app", "certificate": pem_cert(self_signed(app_key))}
    assert admin.post("/admin/apps", json=with_cert, headers=ADMIN).status_code == 201
    service = {"providerName": "PkiConnectorFEService", "uri": "https://127.0.0.1:9/pki"}
    assert admin.post("/admin/services", json=service, headers=ADMIN).status_code == 204
    discovery = "/graph/v1.0/servicePrincipals/appId=0000000a-0000-0000-c000-000000000000/endpoints"
    answer = admin.get(discovery, headers={"Authorization": f"Bearer {graph_token}"}).json
    assert answer is not None
    assert {e["providerName"]: e["uri"] for e in answer["value"]}["PkiConnectorFEService"] == "https://127.0.0.1:9/pki"


def test_notifications_listing(admin: FlaskClient, emulator: IntuneEmulator) -> None:
    emulator.record_notification("failure", {"transactionId": "t", "hResult": 1})
    listing = admin.get("/admin/notifications", headers=ADMIN).json
    assert listing is not None and listing["value"][0]["transactionId"] == "t"
