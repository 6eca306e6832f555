"""Real MSAL for Python against a running EmulatorServer (intune-api.md §2)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import jwt
import msal
import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_server.emulator import EmulatorServer

from .helpers import pem_cert, pem_key, self_signed

INTUNE_APP_ID = "0000000a-0000-0000-c000-000000000000"


@pytest.fixture
def captured(session: requests.Session) -> Iterator[list[requests.PreparedRequest]]:
    requests_seen: list[requests.PreparedRequest] = []
    session.hooks["response"].append(lambda response, *args, **kwargs: requests_seen.append(response.request))
    yield requests_seen


def _app(server: EmulatorServer, session: requests.Session, client_id: str, credential: Any) -> Any:
    return msal.ConfidentialClientApplication(
        client_id, client_credential=credential, authority=f"{server.url}/{server.emulator.tenant}",
        instance_discovery=False, http_client=session)


def _form(request: requests.PreparedRequest) -> dict[str, str]:
    body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
    return {key: values[0] for key, values in parse_qs(body).items()}


def test_secret(server: EmulatorServer, session: requests.Session, captured: list[requests.PreparedRequest]) -> None:
    client_id, secret = server.register_client()
    app = _app(server, session, client_id, secret)
    result = app.acquire_token_for_client(scopes=[f"{server.url}/intune-api/.default"])
    assert "access_token" in result, result
    assert [r.path_url for r in captured] == [f"/{server.emulator.tenant}/v2.0/.well-known/openid-configuration",
                                              f"/{server.emulator.tenant_id}/oauth2/v2.0/token"]
    assert _form(captured[1])["grant_type"] == "client_credentials"
    counters = server.emulator.counters()
    assert counters["openid-configuration"] == 1 and counters["token"] == 1


def test_wrong_secret_and_unknown_client(server: EmulatorServer, session: requests.Session) -> None:
    client_id, _ = server.register_client()
    scopes = [f"{server.url}/intune-api/.default"]
    wrong = _app(server, session, client_id, "not-the-secret").acquire_token_for_client(scopes=scopes)
    assert wrong["error"] == "invalid_client" and wrong["error_codes"] == [7000215]
    assert wrong["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    unknown = _app(server, session, "no-such-app", "x").acquire_token_for_client(scopes=scopes)
    assert unknown["error"] == "unauthorized_client" and unknown["error_codes"] == [700016]


@pytest.mark.parametrize(("form", "algorithm", "header"), [("public_certificate", "PS256", "x5t#S256"),
                                                           ("thumbprint", "RS256", "x5t")])
def test_certificate_credentials(server: EmulatorServer, session: requests.Session, app_key: rsa.RSAPrivateKey,
                                 captured: list[requests.PreparedRequest], form: str, algorithm: str,
                                 header: str) -> None:
    certificate = self_signed(app_key)
    server.emulator.register_app("cert-app", certificate=certificate)
    second = pem_cert(certificate) if form == "public_certificate" else certificate.fingerprint(hashes.SHA1()).hex()
    app = _app(server, session, "cert-app", {"private_key": pem_key(app_key), form: second})
    result = app.acquire_token_for_client(scopes=[f"{server.url}/graph/.default"])
    assert "access_token" in result, result
    assertion_header = jwt.get_unverified_header(_form(captured[-1])["client_assertion"])
    assert assertion_header["alg"] == algorithm and header in assertion_header
    endpoints = session.get(f"{server.url}/graph/v1.0/servicePrincipals/appId={INTUNE_APP_ID}/endpoints",
                            headers={"Authorization": f"Bearer {result['access_token']}"})
    assert endpoints.status_code == 200
    names = {e["providerName"]: e["uri"] for e in endpoints.json()["value"]}
    assert names["ScepRequestValidationFEService"] == f"{server.url}/intune/scep"
    assert names["PkiConnectorFEService"] == f"{server.url}/intune/pki"


def test_unregistered_certificate(
    server: EmulatorServer, session: requests.Session, app_key: rsa.RSAPrivateKey
) -> None:
    server.emulator.register_app("cert-app", certificate=self_signed(app_key))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    credential = {"private_key": pem_key(other), "public_certificate": pem_cert(self_signed(other))}
    app = _app(server, session, "cert-app", credential)
    result = app.acquire_token_for_client(scopes=[f"{server.url}/graph/.default"])
    assert result["error"] == "invalid_client" and result["error_codes"] == [700027]
