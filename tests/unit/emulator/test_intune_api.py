"""Intune's SCEP and PKI calls and Graph discovery over HTTP (intune-api.md §3-§6), via the test client."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey as RSAKey
from flask.testing import FlaskClient

from scep_server.emulator import IntuneEmulator
from scep_server.intune.contract import ChallengeSpec
from tests.support.clocks import FakeClock

from .helpers import (
    BASE,
    GRAPH_SCOPE,
    UNSET,
    csr_for,
    failure_body,
    intune_headers,
    success_body,
    token,
    validate_body,
)

SCEP = "/intune/scep/ScepActions"
PKI = "/intune/pki/CertificateAuthorityRequests"
DISCOVERY = "/graph/v1.0/servicePrincipals/appId=0000000a-0000-0000-c000-000000000000/endpoints"
ISSUER = "CN=scep-server Dev CA,O=scep-server"
CALLS: list[tuple[str, str, dict[str, Any]]] = [
    (f"{SCEP}/validateRequest", "2018-02-20", validate_body("MIIB")),
    (f"{SCEP}/successNotification", "2018-02-20", success_body()),
    (f"{SCEP}/failureNotification", "2018-02-20", failure_body()),
    (f"{PKI}/downloadRevocationRequests", "5019-05-05",
     {"downloadParameters": {"maxRequests": 10, "issuerName": None}}),
    (f"{PKI}/uploadRevocationResults", "5019-05-05",
     {"results": [{"requestContext": "x", "succeeded": True, "errorCode": "0", "errorMessage": ""}]}),
]
CALL_IDS = [path.rsplit("/", 1)[1] for path, _, _ in CALLS]


def _call(client: FlaskClient, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    response = client.post(path, json=body, headers=headers)
    return response.status_code, response.json


def _crafted(emulator: IntuneEmulator, **changes: Any) -> str:
    now = int(emulator.clock())
    claims = {"aud": f"{BASE}/intune-api/", "iss": f"{BASE}/{emulator.tenant_id}/v2.0", "tid": emulator.tenant_id,
              "iat": now, "nbf": now, "exp": now + 3600, "appid": "a", "roles": ["scep_challenge_provider"], **changes}
    return emulator.sign_token({k: v for k, v in claims.items() if v is not UNSET})


@pytest.mark.parametrize(("path", "version", "body"), CALLS, ids=CALL_IDS)
def test_a_valid_call_is_answered(client: FlaskClient, path: str, version: str, body: dict[str, Any]) -> None:
    status, answer = _call(client, path, body, intune_headers(token(client), version))
    assert status == 200, answer


@pytest.mark.parametrize(("path", "version", "body"), CALLS, ids=CALL_IDS)
def test_tokens_are_enforced(client: FlaskClient, emulator: IntuneEmulator, clock: FakeClock[float],
                             path: str, version: str, body: dict[str, Any]) -> None:
    foreign_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    valid = jwt.decode(token(client), options={"verify_signature": False})
    foreign = jwt.encode(valid, foreign_key, algorithm="RS256",
                         headers={"kid": jwt.get_unverified_header(token(client))["kid"]})
    emulator.register_app("no-consent", secret="x", intune_roles=())
    unauthorized = {
        "missing": None,
        "garbage": "not-a-token",
        "foreign key": foreign,
        "graph audience": token(client, GRAPH_SCOPE),
        "other tenant": _crafted(emulator, tid="72f988bf-86f1-41af-91ab-2d7cd011db47"),
        "not yet valid": _crafted(emulator, nbf=int(clock()) + 60),
        "no expiry": _crafted(emulator, exp=UNSET),
    }
    for reason, bearer in unauthorized.items():
        status, answer = _call(client, path, body, intune_headers(bearer, version))
        assert status == 401, reason
        assert answer["code"] == "Unauthorized"
    basic = intune_headers(None, version, Authorization="Basic dXNlcjpwYXNz")
    assert client.post(path, json=body, headers=basic).headers["WWW-Authenticate"].startswith("Bearer")
    for bearer in (token(client, client_id="no-consent", secret="x"), _crafted(emulator, roles=["other"])):
        assert _call(client, path, body, intune_headers(bearer, version))[0] == 403
    expiring = token(client)
    clock.advance(3600)
    assert _call(client, path, body, intune_headers(expiring, version))[0] == 401


@pytest.mark.parametrize(("path", "version", "body"), CALLS, ids=CALL_IDS)
def test_headers_are_enforced(client: FlaskClient, path: str, version: str, body: dict[str, Any]) -> None:
    bearer = token(client)
    other_version = "5019-05-05" if version == "2018-02-20" else "2018-02-20"
    for headers in (intune_headers(bearer, other_version), intune_headers(bearer, **{"api-version": None}),
                    intune_headers(bearer, version, **{"client-request-id": None}),
                    intune_headers(bearer, version, **{"client-request-id": "activity-1"}),
                    intune_headers(bearer, version, UserAgent=None)):
        status, answer = _call(client, path, body, headers)
        assert status == 400 and answer["code"] == "BadRequest", headers
    response = client.post(path, data="{}", headers=intune_headers(bearer, version))  # not application/json
    assert response.status_code == 400


@pytest.mark.parametrize("body", [
    None, [], {"request": {}}, {"request": {"transactionId": "t", "certificateRequest": "x"}},
    {"request": {"transactionId": "", "certificateRequest": "x", "callerInfo": "p"}},
    {"request": {"transactionId": "t", "certificateRequest": 7, "callerInfo": "p"}},
])
def test_validate_request_body_shape(client: FlaskClient, body: Any) -> None:
    status, answer = _call(client, f"{SCEP}/validateRequest", body, intune_headers(token(client)))
    assert status == 400 and answer["code"] == "BadRequest"


def test_validate_request_over_http_is_recorded(client: FlaskClient, emulator: IntuneEmulator,
                                                device_key: RSAKey) -> None:
    spec = ChallengeSpec(subject="CN=alice@contoso.com")
    csr = csr_for(spec, device_key, emulator.mint_challenge(spec))
    headers = intune_headers(token(client))
    status, answer = _call(client, f"{SCEP}/validateRequest", validate_body(csr, "tid-7"), headers)
    assert (status, answer) == (200, {"code": "Success", "errorDescription": ""})
    status, answer = _call(client, f"{SCEP}/validateRequest", validate_body(csr, "tid-8"), headers)
    assert answer["code"] == "BadCertificateRequestIdInChallenge"
    first = emulator.validations[0]
    assert first["transactionId"] == "tid-7" and first["clientRequestId"] == headers["client-request-id"]
    assert first["userAgent"] == "scep-server/test" and first["callerInfo"] == "scep-server/test"


def test_notifications_are_recorded(client: FlaskClient, emulator: IntuneEmulator, device_key: RSAKey) -> None:
    spec = ChallengeSpec(subject="CN=alice@contoso.com")
    csr = csr_for(spec, device_key, emulator.mint_challenge(spec))
    headers = intune_headers(token(client))
    _call(client, f"{SCEP}/validateRequest", validate_body(csr, "tid-1"), headers)
    assert _call(client, f"{SCEP}/successNotification", success_body("tid-1"), headers)[1]["code"] == "Success"
    assert _call(client, f"{SCEP}/failureNotification", failure_body("tid-2", hResult=-2147467259), headers)[0] == 200
    success, failure = emulator.notifications
    assert success["type"] == "success" and success["transactionId"] == "tid-1" and success["validated"] is True
    assert success["notification"] == success_body("tid-1")["notification"]
    assert success["time"] == emulator.clock() and success["clientRequestId"] == headers["client-request-id"]
    assert failure["type"] == "failure" and failure["validated"] is False
    assert failure["notification"]["hResult"] == -2147467259


@pytest.mark.parametrize("changes", [
    {"transactionId": UNSET}, {"certificateRequest": ""}, {"certificateThumbprint": "abc"},
    {"certificateSerialNumber": "not-hex"}, {"certificateExpirationDateUtc": "tomorrow"},
    {"certificateExpirationDateUtc": "2027-06-11T16:11:20+02:00"}, {"issuingCertificateAuthority": UNSET},
    {"callerInfo": UNSET}, {"caConfiguration": UNSET}, {"certificateAuthority": 5},
])
def test_success_notification_fields(client: FlaskClient, emulator: IntuneEmulator, changes: dict[str, Any]) -> None:
    headers = intune_headers(token(client))
    status, answer = _call(client, f"{SCEP}/successNotification", success_body(**changes), headers)
    assert status == 400 and answer["code"] == "BadRequest"
    assert emulator.notifications == []


@pytest.mark.parametrize("changes", [{"hResult": "0x80004005"}, {"hResult": 2**32}, {"hResult": True},
                                     {"hResult": UNSET}, {"errorDescription": UNSET}, {"transactionId": ""}])
def test_failure_notification_fields(client: FlaskClient, changes: dict[str, Any]) -> None:
    headers = intune_headers(token(client))
    status, answer = _call(client, f"{SCEP}/failureNotification", failure_body(**changes), headers)
    assert status == 400 and answer["code"] == "BadRequest"


# --- revocation (§6) ---

def _pki(client: FlaskClient, action: str, body: Any) -> tuple[int, Any]:
    return _call(client, f"{PKI}/{action}", body, intune_headers(token(client), "5019-05-05"))


def _download(client: FlaskClient, maximum: int = 500, issuer: str | None = None) -> list[dict[str, str]]:
    status, answer = _pki(client, "downloadRevocationRequests",
                          {"downloadParameters": {"maxRequests": maximum, "issuerName": issuer}})
    assert status == 200, answer
    return list(answer["value"])


def _result(context: str, succeeded: bool = True, code: str = "0") -> dict[str, Any]:
    return {"requestContext": context, "succeeded": succeeded, "errorCode": code, "errorMessage": ""}


def test_revocation_queue(client: FlaskClient, emulator: IntuneEmulator) -> None:
    first = emulator.queue_revocation("01AF", ISSUER, "ca.contoso.com\\CA")
    second = emulator.queue_revocation("02BF", "CN = scep-server Dev CA, O = scep-server")
    third = emulator.queue_revocation("03CF", "CN=Other CA")
    assert _download(client, 2) == [
        {"requestContext": first, "serialNumber": "01AF", "issuerName": ISSUER,
         "caConfiguration": "ca.contoso.com\\CA"},
        {"requestContext": second, "serialNumber": "02BF", "issuerName": "CN = scep-server Dev CA, O = scep-server",
         "caConfiguration": ""},
    ]
    assert [r["requestContext"] for r in _download(client, issuer=ISSUER)] == [first, second]
    assert [r["requestContext"] for r in _download(client, issuer="cn=other ca")] == [third]
    assert len(_download(client)) == 3  # pending until a result is accepted


def test_revocation_results(client: FlaskClient, emulator: IntuneEmulator) -> None:
    done, retry, conflict = (emulator.queue_revocation(s, ISSUER) for s in ("01", "02", "03"))
    results = [_result(done), _result(retry, False, "4101"), _result(conflict, False, "4005")]
    assert _pki(client, "uploadRevocationResults", {"results": results}) == (200, {"value": True})
    assert [r["requestContext"] for r in _download(client)] == [retry]  # retryable failures stay pending
    recorded = emulator.revocation_results
    assert [(r["serialNumber"], r["accepted"], r["errorCode"]) for r in recorded] == [
        ("01", True, "0"), ("02", True, "4101"), ("03", True, "4005")]


@pytest.mark.parametrize("bad", [
    _result("unknown-context"),
    {"succeeded": True, "errorCode": "4004"},
    {"succeeded": False, "errorCode": "0"},
    {"succeeded": False, "errorCode": "1234"},
    {"succeeded": False, "errorCode": "x"},
])
def test_revocation_upload_is_all_or_nothing(
    client: FlaskClient, emulator: IntuneEmulator, bad: dict[str, Any]
) -> None:
    good, other = emulator.queue_revocation("01", ISSUER), emulator.queue_revocation("02", ISSUER)
    results = [_result(good), {**_result(other), **bad}]
    assert _pki(client, "uploadRevocationResults", {"results": results}) == (200, {"value": False})
    assert len(_download(client)) == 2
    assert [r["accepted"] for r in emulator.revocation_results] == [False, False]
    assert emulator.revocation_results[0]["reason"]


@pytest.mark.parametrize(("action", "body"), [
    ("downloadRevocationRequests", {"downloadParameters": {"maxRequests": 0}}),
    ("downloadRevocationRequests", {"downloadParameters": {"maxRequests": 501}}),
    ("downloadRevocationRequests", {"downloadParameters": {"maxRequests": "10"}}),
    ("downloadRevocationRequests", {"downloadParameters": {"maxRequests": 10, "issuerName": 5}}),
    ("downloadRevocationRequests", {}),
    ("uploadRevocationResults", {"results": []}),
    ("uploadRevocationResults", {"results": [{"requestContext": "x", "succeeded": "yes", "errorCode": "0",
                                              "errorMessage": ""}]}),
    ("uploadRevocationResults", {"results": [{"requestContext": "x", "succeeded": True, "errorCode": 0,
                                              "errorMessage": ""}]}),
    ("uploadRevocationResults", {"results": ["x"]}),
])
def test_revocation_body_shape(client: FlaskClient, action: str, body: Any) -> None:
    status, answer = _pki(client, action, body)
    assert status == 400 and answer["code"] == "BadRequest"


# --- Graph discovery (§3) ---

def test_discovery(client: FlaskClient, emulator: IntuneEmulator) -> None:
    graph = {"Authorization": f"Bearer {token(client, GRAPH_SCOPE)}",
             "client-request-id": "c0ffee00-0000-0000-0000-000000000001"}
    response = client.get(DISCOVERY, headers=graph)
    assert response.status_code == 200 and response.json is not None
    services = {e["providerName"]: e["uri"] for e in response.json["value"]}
    assert services["ScepRequestValidationFEService"] == f"{BASE}/intune/scep"
    assert services["PkiConnectorFEService"] == f"{BASE}/intune/pki"
    emulator.set_service_uri("scePrequestValidationFEService", "https://127.0.0.1:1/moved/")
    moved = client.get(DISCOVERY, headers=graph).json
    assert moved is not None
    assert {e["providerName"]: e["uri"] for e in moved["value"]}["scePrequestValidationFEService"] == \
        "https://127.0.0.1:1/moved"
    assert emulator.counters()["discovery"] == 2


def test_discovery_refusals(client: FlaskClient, emulator: IntuneEmulator) -> None:
    graph = {"Authorization": f"Bearer {token(client, GRAPH_SCOPE)}"}
    other_app = client.get(DISCOVERY.replace("0000000a", "0000000b"), headers=graph)
    assert other_app.status_code == 404 and other_app.json is not None
    assert other_app.json["error"]["code"] == "Request_ResourceNotFound"
    assert client.get(DISCOVERY.replace("v1.0", "v2.0"), headers=graph).status_code == 400
    intune_token = client.get(DISCOVERY, headers={"Authorization": f"Bearer {token(client)}"})
    assert intune_token.status_code == 401 and intune_token.json is not None
    assert intune_token.json["error"]["code"] == "InvalidAuthenticationToken"
    no_role = _crafted(emulator, aud=f"{BASE}/graph/", roles=["User.Read.All"])
    assert client.get(DISCOVERY, headers={"Authorization": f"Bearer {no_role}"}).status_code == 403
    assert client.get(DISCOVERY).status_code == 401


def test_unknown_paths_answer_json(client: FlaskClient) -> None:
    response = client.get("/intune/scep/ScepActions/nothing")
    assert response.status_code == 404 and response.json is not None and "error" in response.json
    assert client.get(f"{SCEP}/validateRequest").status_code == 405
