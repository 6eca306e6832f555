"""Fault injection on every surface."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey as RSAKey
from flask.testing import FlaskClient

from scep_server.emulator import Code, EmulatorServer, IntuneEmulator
from scep_server.intune.contract import ChallengeSpec

from .helpers import GRAPH_SCOPE, csr_for, intune_headers, success_body, token, validate_body

VALIDATE = "/intune/scep/ScepActions/validateRequest"
TOKEN = "/contoso.onmicrosoft.com/oauth2/v2.0/token"
DISCOVERY = "/graph/v1.0/servicePrincipals/appId=0000000a-0000-0000-c000-000000000000/endpoints"


def _validate(client: FlaskClient, body: Any = None) -> Any:
    return client.post(VALIDATE, json=body or validate_body("MIIB"), headers=intune_headers(token(client)))


def test_status_for_n_calls(client: FlaskClient, emulator: IntuneEmulator) -> None:
    emulator.inject_fault("validateRequest", status=500, times=2)
    for _ in range(2):
        response = _validate(client)
        assert response.status_code == 500
        assert response.json == {"code": "InternalServerError",
                                 "errorDescription": "injected by the emulator: HTTP 500"}
    assert _validate(client).status_code == 200
    assert emulator.counters()["validateRequest"] == 3


def test_status_until_cleared_with_retry_after(client: FlaskClient, emulator: IntuneEmulator) -> None:
    emulator.inject_fault("validateRequest", status=503, retry_after=2)
    for _ in range(3):
        response = _validate(client)
        assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert set(emulator.faults()) == {"validateRequest"}
    emulator.clear_faults()
    assert _validate(client).status_code == 200


def test_status_bodies_follow_each_surface(client: FlaskClient, emulator: IntuneEmulator) -> None:
    graph_token = token(client, GRAPH_SCOPE)
    emulator.inject_fault("token", status=500, times=1)
    emulator.inject_fault("discovery", status=429, times=1)
    emulator.inject_fault("openid-configuration", status=502, times=1)
    entra = client.post(TOKEN, data={"grant_type": "client_credentials"})
    assert entra.status_code == 500 and entra.json is not None
    assert entra.json["error"] == "temporarily_unavailable" and entra.json["error_codes"] == [90033]
    graph = client.get(DISCOVERY, headers={"Authorization": f"Bearer {graph_token}"})
    assert graph.status_code == 429 and graph.json is not None and graph.json["error"]["code"] == "TooManyRequests"
    assert client.get("/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration").status_code == 502


def test_malformed_json(client: FlaskClient, emulator: IntuneEmulator) -> None:
    emulator.inject_fault("successNotification", malformed_json=True, times=1)
    response = client.post("/intune/scep/ScepActions/successNotification", json=success_body(),
                           headers=intune_headers(token(client)))
    assert response.status_code == 200 and response.mimetype == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.get_data(as_text=True))
    assert emulator.notifications == []


def test_auth_failure(client: FlaskClient, emulator: IntuneEmulator) -> None:
    emulator.inject_fault("token", auth_failure=True, times=1)
    response = client.post(TOKEN, data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"})
    assert response.status_code == 401 and response.json is not None
    assert response.json["error"] == "invalid_client" and response.json["error_codes"] == [7000215]
    emulator.inject_fault("validateRequest", auth_failure=True, times=1)
    assert _validate(client).status_code == 401
    assert _validate(client).status_code == 200


def test_code(client: FlaskClient, emulator: IntuneEmulator, device_key: RSAKey) -> None:
    spec = ChallengeSpec(subject="CN=a")
    body = validate_body(csr_for(spec, device_key, emulator.mint_challenge(spec)))
    emulator.inject_fault("validateRequest", code="ScepProfileNoLongerTargetedToTheClient", times=1)
    answer = _validate(client, body)
    assert answer.status_code == 200 and answer.json is not None
    assert answer.json["code"] == "ScepProfileNoLongerTargetedToTheClient"
    assert emulator.validations[-1]["code"] == "ScepProfileNoLongerTargetedToTheClient"
    emulator.inject_fault("successNotification", code="SignatureValidationFailed", times=1)
    notified = client.post("/intune/scep/ScepActions/successNotification", json=success_body(),
                           headers=intune_headers(token(client)))
    assert notified.json is not None and notified.json["code"] == "SignatureValidationFailed"
    assert emulator.notifications[-1]["answer"] == "SignatureValidationFailed"
    assert _validate(client, body).json["code"] == "Success"


def test_latency_then_normal_answer(client: FlaskClient, emulator: IntuneEmulator) -> None:
    emulator.inject_fault("validateRequest", latency=0.2, times=1)
    started = time.monotonic()
    assert _validate(client).status_code == 200
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(("endpoint", "options"), [
    ("nowhere", {"status": 500}),
    ("validateRequest", {}),
    ("validateRequest", {"status": 99}),
    ("validateRequest", {"status": 500, "times": 0}),
    ("validateRequest", {"latency": -1}),
    ("token", {"code": "Success"}),
    ("validateRequest", {"code": "Fine"}),
    ("validateRequest", {"status": 503, "retry_after": 1.5}),
])
def test_invalid_faults(emulator: IntuneEmulator, endpoint: str, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        emulator.inject_fault(endpoint, **options)


def test_hang_fires_the_client_timeout_and_stop_does_not_wait(
    server: EmulatorServer, session: requests.Session
) -> None:
    client_id, secret = server.register_client()
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
            "scope": f"{server.url}/intune-api/.default"}
    server.emulator.inject_fault("token", hang=30, times=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.post(f"{server.url}/{server.emulator.tenant}/oauth2/v2.0/token", data=form, timeout=(2, 0.3))
    assert session.post(f"{server.url}/{server.emulator.tenant}/oauth2/v2.0/token", data=form, timeout=5).ok
    server.emulator.inject_fault("token", hang=30)
    hung = threading.Thread(target=_swallow, args=(session, f"{server.url}/{server.emulator.tenant}/oauth2/v2.0/token",
                                                   form))
    hung.start()
    time.sleep(0.2)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    hung.join(timeout=5)
    assert not hung.is_alive()
    counters = server.emulator.counters()
    assert counters["token"] == 3 and counters[f"tokens:{form['scope']}"] == 1  # hung calls changed nothing


def _swallow(session: requests.Session, url: str, form: dict[str, str]) -> None:
    with requests.Session() as own:
        own.verify, own.trust_env = session.verify, False
        try:
            own.post(url, data=form, timeout=10)
        except requests.exceptions.RequestException:
            pass


@pytest.mark.parametrize("code", [c for c in Code if c is not Code.SUCCESS])
def test_every_intune_code_can_be_answered(client: FlaskClient, emulator: IntuneEmulator, code: Code) -> None:
    emulator.inject_fault("validateRequest", code=code, times=1)
    response = _validate(client)
    assert response.status_code == 200
    assert response.json == {"code": code, "errorDescription": "injected by the emulator"}
