"""What an admin does to the app in the emulator: revoke or grant the consent, let Entra ID refuse it for a
while, and what Graph tells of its credentials' expiry."""

from __future__ import annotations

from datetime import UTC, datetime

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey as RSAKey
from flask.testing import FlaskClient

from scep_server.emulator import IntuneEmulator, create_app
from scep_server.emulator.tokens import SECRET_LIFETIME
from tests.support.clocks import FakeClock

from .helpers import CLIENT_ID, GRAPH_SCOPE, SECRET, intune_headers, pem_cert, self_signed, token, validate_body

ADMIN = {"Authorization": "Bearer admin-secret"}
TOKEN = "/contoso.onmicrosoft.com/oauth2/v2.0/token"
VALIDATE = "/intune/scep/ScepActions/validateRequest"
APPLICATION = f"/graph/v1.0/applications(appId='{CLIENT_ID}')"


@pytest.fixture
def admin(emulator: IntuneEmulator) -> FlaskClient:
    return create_app(emulator, admin_token="admin-secret").test_client()


def _roles(access_token: str) -> object:
    return jwt.decode(access_token, options={"verify_signature": False}).get("roles")


def _token_request(client: FlaskClient) -> int:
    return client.post(TOKEN, data={"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                    "client_secret": SECRET, "scope": "http://localhost/intune-api/.default"}
                       ).status_code


# --- consent ------------------------------------------------------------------------------------------------


def test_revoking_the_consent_issues_tokens_without_the_role(admin: FlaskClient) -> None:
    before = token(admin)
    assert _roles(before) == ["scep_challenge_provider"]
    assert admin.post(f"/admin/apps/{CLIENT_ID}/roles", json={"intuneRoles": []}, headers=ADMIN).status_code == 204
    after = token(admin)
    assert _roles(after) is None  # Entra ID leaves the claim out when nothing is consented
    refused = admin.post(VALIDATE, json=validate_body("MIIB"), headers=intune_headers(after))
    assert refused.status_code == 403 and "scep_challenge_provider" in refused.json["errorDescription"]  # type: ignore[index]
    assert admin.post(f"/admin/apps/{CLIENT_ID}/roles", json={"intuneRoles": ["scep_challenge_provider"]},
                      headers=ADMIN).status_code == 204
    assert _roles(token(admin)) == ["scep_challenge_provider"]


@pytest.mark.parametrize(("client_id", "body"), [(CLIENT_ID, {}), (CLIENT_ID, {"intuneRoles": "x"}),
                                                 ("unknown-app", {"intuneRoles": []})])
def test_consent_changes_are_checked(admin: FlaskClient, client_id: str, body: dict[str, object]) -> None:
    response = admin.post(f"/admin/apps/{client_id}/roles", json=body, headers=ADMIN)
    assert response.status_code == 400 and response.json is not None and response.json["error"]


# --- Entra ID refusing for a while ----------------------------------------------------------------------


def test_a_fault_for_some_seconds_ends_by_itself(
    client: FlaskClient, emulator: IntuneEmulator, clock: FakeClock[float]
) -> None:
    emulator.inject_fault("token", auth_failure=True, seconds=30)
    assert _token_request(client) == 401
    clock.advance(29)
    assert _token_request(client) == 401 and emulator.faults()["token"]["secondsLeft"] == 1
    clock.advance(1)
    assert _token_request(client) == 200 and emulator.faults() == {}


def test_a_timed_fault_through_the_admin_api(admin: FlaskClient, clock: FakeClock[float]) -> None:
    fault = {"endpoint": "token", "status": 503, "seconds": 10}
    assert admin.post("/admin/faults", json=fault, headers=ADMIN).status_code == 204
    assert _token_request(admin) == 503
    clock.advance(10)
    assert _token_request(admin) == 200


@pytest.mark.parametrize("seconds", [0, -1, "10", True])
def test_a_fault_duration_must_be_positive(admin: FlaskClient, seconds: object) -> None:
    fault = {"endpoint": "token", "authFailure": True, "seconds": seconds}
    assert admin.post("/admin/faults", json=fault, headers=ADMIN).status_code == 400


def test_times_and_seconds_whichever_ends_first(
    client: FlaskClient, emulator: IntuneEmulator, clock: FakeClock[float]
) -> None:
    emulator.inject_fault("token", status=500, times=1, seconds=60)
    assert _token_request(client) == 500 and _token_request(client) == 200


# --- the app in Graph ---------------------------------------------------------------------------------


def test_graph_lists_the_secret_with_its_hint_and_expiry(
    client: FlaskClient, emulator: IntuneEmulator, clock: FakeClock[float]
) -> None:
    answer = client.get(APPLICATION + "?$select=passwordCredentials",
                        headers={"Authorization": f"Bearer {token(client, GRAPH_SCOPE)}"})
    assert answer.status_code == 200 and answer.json is not None
    (password,) = answer.json["passwordCredentials"]
    assert password["hint"] == SECRET[:3] and password["secretText"] is None and SECRET not in answer.text
    end = datetime.fromisoformat(password["endDateTime"])
    assert end == datetime.fromtimestamp(int(clock() + SECRET_LIFETIME), UTC)
    assert answer.json["appId"] == CLIENT_ID and answer.json["keyCredentials"] == []
    assert emulator.counters()["application"] == 1


def test_an_app_registered_with_a_secret_expiry_and_a_certificate(admin: FlaskClient, app_key: RSAKey) -> None:
    certificate = self_signed(app_key)
    app = {"clientId": "app-2", "clientSecret": "zzz-secret", "secretExpires": "2031-02-03T04:05:06+00:00",
           "certificate": pem_cert(certificate)}
    assert admin.post("/admin/apps", json=app, headers=ADMIN).status_code == 201
    graph = token(admin, GRAPH_SCOPE, client_id="app-2", secret="zzz-secret")
    answer = admin.get("/graph/v1.0/applications(appId='app-2')", headers={"Authorization": f"Bearer {graph}"}).json
    assert answer is not None and answer["passwordCredentials"][0]["endDateTime"] == "2031-02-03T04:05:06Z"
    (key,) = answer["keyCredentials"]
    assert key["endDateTime"] == f"{certificate.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}" and key["key"] is None


@pytest.mark.parametrize("expires", ["2031-02-03", "soon", 1234])
def test_a_secret_expiry_needs_an_offset(admin: FlaskClient, expires: object) -> None:
    app = {"clientId": "app-3", "clientSecret": "s", "secretExpires": expires}
    assert admin.post("/admin/apps", json=app, headers=ADMIN).status_code == 400


def test_graph_answers_an_unknown_app_and_a_missing_token_like_graph(client: FlaskClient) -> None:
    graph = {"Authorization": f"Bearer {token(client, GRAPH_SCOPE)}"}
    missing = client.get("/graph/v1.0/applications(appId='nobody')", headers=graph)
    assert missing.status_code == 404 and missing.json["error"]["code"] == "Request_ResourceNotFound"  # type: ignore[index]
    assert client.get(APPLICATION).status_code == 401
    assert client.get(APPLICATION, headers={"Authorization": f"Bearer {token(client)}"}).status_code == 401
    assert client.get(f"/graph/v2.0/applications(appId='{CLIENT_ID}')", headers=graph).status_code == 400
