"""Entra ID: metadata and the client-credentials grant (intune-api.md §2), through the Flask test client."""

from __future__ import annotations

import base64
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient

from scep_server.emulator import IntuneEmulator
from tests.support.clocks import FakeClock

from .helpers import BASE, CLIENT_ID, GRAPH_SCOPE, INTUNE_SCOPE, SECRET, self_signed, token

TENANT = "contoso.onmicrosoft.com"
TOKEN_PATH = f"/{TENANT}/oauth2/v2.0/token"
CERT_CLIENT = "cert-client"


def _post(client: FlaskClient, **form: str) -> tuple[int, dict[str, Any]]:
    values = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "scope": INTUNE_SCOPE, **form}
    response = client.post(TOKEN_PATH, data={k: v for k, v in values.items() if v})
    assert response.json is not None
    return response.status_code, response.json


def _claims(emulator: IntuneEmulator, access_token: str) -> dict[str, Any]:
    key = jwt.PyJWK(emulator.jwks()["keys"][0])
    return jwt.decode(access_token, key, algorithms=["RS256"], options={"verify_aud": False, "verify_exp": False,
                                                                        "verify_iat": False, "verify_nbf": False})


def test_openid_configuration_by_name_and_by_id(client: FlaskClient, emulator: IntuneEmulator) -> None:
    for tenant in (TENANT, emulator.tenant_id, TENANT.upper()):
        response = client.get(f"/{tenant}/v2.0/.well-known/openid-configuration")
        assert response.status_code == 200 and response.json is not None
        assert response.json["token_endpoint"] == f"{BASE}/{emulator.tenant_id}/oauth2/v2.0/token"
        assert response.json["issuer"] == f"{BASE}/{emulator.tenant_id}/v2.0"


def test_unknown_tenant(client: FlaskClient) -> None:
    response = client.get("/fabrikam.onmicrosoft.com/v2.0/.well-known/openid-configuration")
    assert response.status_code == 400 and response.json is not None
    assert response.json["error"] == "invalid_tenant" and response.json["error_codes"] == [90002]
    assert client.post("/fabrikam.onmicrosoft.com/oauth2/v2.0/token").status_code == 400


def test_secret_grants_an_intune_token(client: FlaskClient, emulator: IntuneEmulator, clock: FakeClock[float]) -> None:
    status, body = _post(client, client_secret=SECRET)
    assert status == 200
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    claims = _claims(emulator, body["access_token"])
    assert claims["aud"] == f"{BASE}/intune-api/"
    assert claims["roles"] == ["scep_challenge_provider"]
    assert claims["tid"] == emulator.tenant_id and claims["appid"] == CLIENT_ID
    assert claims["iss"] == f"{BASE}/{emulator.tenant_id}/v2.0"
    assert claims["iat"] == claims["nbf"] == int(clock()) and claims["exp"] == int(clock()) + 3600
    assert emulator.counters()[f"tokens:{INTUNE_SCOPE}"] == 1


def test_graph_token_and_trailing_slashes(client: FlaskClient, emulator: IntuneEmulator) -> None:
    graph = _claims(emulator, token(client, GRAPH_SCOPE))
    assert graph["aud"] == f"{BASE}/graph/"
    assert graph["roles"] == ["Application.Read.All", "DeviceManagementManagedDevices.Read.All", "Device.Read.All"]
    doubled = _claims(emulator, token(client, f"{BASE}/intune-api//.default"))
    bare = _claims(emulator, token(client, INTUNE_SCOPE))
    assert doubled["aud"] == bare["aud"] == f"{BASE}/intune-api/"
    assert emulator.counters()[f"tokens:{BASE}/intune-api//.default"] == 1


def test_app_without_consent_gets_a_token_without_roles(client: FlaskClient, emulator: IntuneEmulator) -> None:
    emulator.register_app("no-consent", secret="x", intune_roles=())
    assert "roles" not in _claims(emulator, token(client, client_id="no-consent", secret="x"))


@pytest.mark.parametrize(("form", "status", "error", "code"), [
    ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
    ({"client_id": "unknown-app", "client_secret": SECRET}, 400, "unauthorized_client", 700016),
    ({"client_id": "", "client_secret": SECRET}, 400, "invalid_request", 900144),
    ({}, 401, "invalid_client", 7000218),
    ({"client_secret": SECRET, "grant_type": "password"}, 400, "unsupported_grant_type", 70003),
    ({"client_secret": SECRET, "scope": f"{BASE}/intune-api/"}, 400, "invalid_scope", 1002012),
    ({"client_secret": SECRET, "scope": f"{INTUNE_SCOPE} {GRAPH_SCOPE}"}, 400, "invalid_scope", 1002012),
    ({"client_secret": SECRET, "scope": "https://api.manage.microsoft.com//.default"}, 400, "invalid_resource",
     500011),
])
def test_token_errors_look_like_entra(client: FlaskClient, form: dict[str, str], status: int, error: str,
                                      code: int) -> None:
    got_status, body = _post(client, **form)
    assert (got_status, body["error"], body["error_codes"]) == (status, error, [code])
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert SECRET not in str(body)


# --- certificate credentials: client assertions (RFC 7523) ---

@pytest.fixture
def certificate(emulator: IntuneEmulator, app_key: rsa.RSAPrivateKey) -> x509.Certificate:
    certificate = self_signed(app_key)
    emulator.register_app(CERT_CLIENT, certificate=certificate)
    return certificate


def _assertion(key: rsa.RSAPrivateKey, certificate: x509.Certificate, now: float, *, algorithm: str = "PS256",
               **claims: Any) -> str:
    header = ({"x5t#S256": _thumb(certificate, hashes.SHA256())} if algorithm == "PS256"
              else {"x5t": _thumb(certificate, hashes.SHA1())})
    payload = {"aud": f"{BASE}/{TENANT}/oauth2/v2.0/token", "iss": CERT_CLIENT, "sub": CERT_CLIENT,
               "exp": int(now) + 600, "iat": int(now), "jti": "1", **claims}
    return jwt.encode(payload, key, algorithm=algorithm, headers=header)


def _thumb(certificate: x509.Certificate, algorithm: hashes.HashAlgorithm) -> str:
    return base64.urlsafe_b64encode(certificate.fingerprint(algorithm)).decode()


def _post_assertion(client: FlaskClient, assertion: str) -> tuple[int, dict[str, Any]]:
    return _post(client, client_id=CERT_CLIENT, client_assertion=assertion,
                 client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer")


@pytest.mark.parametrize("algorithm", ["PS256", "RS256"])
def test_client_assertion(client: FlaskClient, emulator: IntuneEmulator, app_key: rsa.RSAPrivateKey,
                          certificate: x509.Certificate, clock: FakeClock[float], algorithm: str) -> None:
    status, body = _post_assertion(client, _assertion(app_key, certificate, clock(), algorithm=algorithm))
    assert status == 200, body
    assert _claims(emulator, body["access_token"])["appid"] == CERT_CLIENT


def test_client_assertion_for_the_tenant_id_endpoint(client: FlaskClient, emulator: IntuneEmulator,
                                                     app_key: rsa.RSAPrivateKey, certificate: x509.Certificate,
                                                     clock: FakeClock[float]) -> None:
    audience = f"{BASE}/{emulator.tenant_id}/oauth2/v2.0/token"
    assert _post_assertion(client, _assertion(app_key, certificate, clock(), aud=audience))[0] == 200


@pytest.mark.parametrize(("claims", "code"), [
    ({"aud": f"{BASE}/common/oauth2/v2.0/token"}, 50027),
    ({"iss": "someone-else"}, 700021),
    ({"sub": "someone-else"}, 700021),
    ({"exp": 1_000}, 700024),
    ({"nbf": 1_900_000_000}, 700024),
    ({"exp": "soon"}, 50027),
])
def test_client_assertion_claims_are_checked(client: FlaskClient, app_key: rsa.RSAPrivateKey,
                                             certificate: x509.Certificate, clock: FakeClock[float],
                                             claims: dict[str, Any], code: int) -> None:
    status, body = _post_assertion(client, _assertion(app_key, certificate, clock(), **claims))
    assert (status, body["error"], body["error_codes"]) == (401, "invalid_client", [code])


def test_client_assertion_signed_by_another_key_or_naming_another_certificate(
    client: FlaskClient, app_key: rsa.RSAPrivateKey, certificate: x509.Certificate, clock: FakeClock[float]
) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = _assertion(other_key, certificate, clock())
    unregistered = _assertion(other_key, self_signed(other_key), clock())
    for assertion in (forged, unregistered):
        status, body = _post_assertion(client, assertion)
        assert (status, body["error_codes"]) == (401, [700027])
    assert _post_assertion(client, "not.a.jwt")[1]["error_codes"] == [50027]


def test_secret_for_a_certificate_only_app_and_bad_assertion_type(client: FlaskClient,
                                                                  certificate: x509.Certificate) -> None:
    assert _post(client, client_id=CERT_CLIENT, client_secret="guess")[1]["error_codes"] == [7000215]
    status, body = _post(client, client_id=CERT_CLIENT, client_assertion="x.y.z", client_assertion_type="saml")
    assert status == 400 and body["error"] == "invalid_request"


def test_jwks_verifies_issued_tokens(client: FlaskClient, emulator: IntuneEmulator) -> None:
    response = client.get(f"/{TENANT}/discovery/v2.0/keys")
    assert response.status_code == 200 and response.json is not None
    key = jwt.PyJWK(response.json["keys"][0])
    assert jwt.get_unverified_header(token(client))["kid"] == response.json["keys"][0]["kid"]
    jwt.decode(token(client), key, algorithms=["RS256"], audience=f"{BASE}/intune-api/",
               options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})


def test_register_app_needs_a_credential(emulator: IntuneEmulator) -> None:
    with pytest.raises(ValueError):
        emulator.register_app("no-credential")
