"""IntuneClient operations against the HTTPS double: exact body shapes (intune-api.md §5, §6) and answers."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from scep_server.errors import IntuneProtocolError
from scep_server.intune.messages import RevocationRequest, RevocationResult, RevocationResultCode
from tests.support.pki import KeyType, new_key, self_signed

from .conftest import Harness
from .double import CloudDouble, Scripted

MakeClient = Callable[..., Harness]
PROVIDER = "scep-server-tests/1.2.3"


def _certificate(serial: int) -> x509.Certificate:
    return self_signed(
        "device-42", new_key(KeyType.P256), serial=serial, not_before=dt.datetime(2018, 6, 11, tzinfo=dt.UTC),
        not_after=dt.datetime(2019, 6, 11, 16, 11, 20, 90477, tzinfo=dt.UTC),
    )


def test_validate_request_body(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    result = make_client().client.validate_request("4BD7F2B1C0A3", csr_der)
    call = cloud.calls[0]
    assert (call["service"], call["path"]) == ("scep", "ScepActions/validateRequest")
    assert call["json"] == {"request": {"transactionId": "4BD7F2B1C0A3",
                                        "certificateRequest": base64.b64encode(csr_der).decode(),
                                        "callerInfo": PROVIDER}}
    assert result.succeeded and result.activity_id == call["headers"]["Client-Request-Id"]


def test_success_notification_body(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    certificate = _certificate(0x00C0FFEE)
    result = make_client().client.send_success_notification(
        transaction_id="tx-9", csr_der=csr_der, certificate=certificate, issuing_ca="CN=Test CA",
        ca_configuration="ca.example\\Test CA", certificate_authority="scep-server")
    assert result.succeeded
    assert cloud.calls[0]["path"] == "ScepActions/successNotification"
    assert cloud.calls[0]["json"] == {"notification": {
        "transactionId": "tx-9",
        "certificateRequest": base64.b64encode(csr_der).decode(),
        "certificateThumbprint": certificate.fingerprint(hashes.SHA1()).hex().upper(),
        "certificateSerialNumber": "00C0FFEE",
        "certificateExpirationDateUtc": "2019-06-11T16:11:20.0000000Z",
        "issuingCertificateAuthority": "CN=Test CA",
        "callerInfo": PROVIDER,
        "caConfiguration": "ca.example\\Test CA",
        "certificateAuthority": "scep-server",
    }}


def test_failure_notification_body(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    cloud.script["ScepActions/failureNotification"].append(
        Scripted(200, {"code": "ChallengeExpired", "errorDescription": "late"}))
    result = make_client().client.send_failure_notification(
        transaction_id="tx-9", csr_der=csr_der, hresult=-2147467259, description="x" * 300)
    assert (result.succeeded, result.code, result.description) == (False, "ChallengeExpired", "late")
    assert cloud.calls[0]["json"] == {"notification": {
        "transactionId": "tx-9",
        "certificateRequest": base64.b64encode(csr_der).decode(),
        "hResult": 0x80004005,
        "errorDescription": "x" * 255,
        "callerInfo": PROVIDER,
    }}


def test_download_revocation_requests(make_client: MakeClient, cloud: CloudDouble) -> None:
    requests = make_client().client.download_revocation_requests(max_requests=500, issuer_name="CN=Test CA")
    call = cloud.calls[0]
    assert (call["service"], call["path"]) == ("pki", "CertificateAuthorityRequests/downloadRevocationRequests")
    assert call["headers"]["Api-Version"] == "5019-05-05"
    assert call["json"] == {"downloadParameters": {"maxRequests": 500, "issuerName": "CN=Test CA"}}
    assert requests == [RevocationRequest("ctx-1", "0A1B", "CN=Test CA", "ca.example\\Test CA")]


def test_download_without_issuer_sends_null(make_client: MakeClient, cloud: CloudDouble) -> None:
    cloud.script["CertificateAuthorityRequests/downloadRevocationRequests"].append(Scripted(200, {"value": []}))
    assert make_client().client.download_revocation_requests() == []
    assert cloud.calls[0]["json"] == {"downloadParameters": {"maxRequests": 100, "issuerName": None}}


@pytest.mark.parametrize("count", [0, 501, -1])
def test_download_bounds(make_client: MakeClient, cloud: CloudDouble, count: int) -> None:
    with pytest.raises(ValueError, match="1-500"):
        make_client().client.download_revocation_requests(max_requests=count)
    assert not cloud.calls


def test_download_with_bad_shape(make_client: MakeClient, cloud: CloudDouble) -> None:
    path = "CertificateAuthorityRequests/downloadRevocationRequests"
    cloud.script[path].append(Scripted(200, {"value": [{"requestContext": "c"}]}))
    with pytest.raises(IntuneProtocolError, match="serialNumber"):
        make_client().client.download_revocation_requests()


def test_upload_revocation_results(make_client: MakeClient, cloud: CloudDouble) -> None:
    results = [
        RevocationResult("ctx-1", True),
        RevocationResult("ctx-2", False, RevocationResultCode.CERTIFICATE_NOT_FOUND_ERROR, "no such serial"),
    ]
    assert make_client().client.upload_revocation_results(results) is True
    assert cloud.calls[0]["path"] == "CertificateAuthorityRequests/uploadRevocationResults"
    assert cloud.calls[0]["json"] == {"results": [
        {"requestContext": "ctx-1", "succeeded": True, "errorCode": "0", "errorMessage": ""},
        {"requestContext": "ctx-2", "succeeded": False, "errorCode": "4004", "errorMessage": "no such serial"},
    ]}


def test_upload_answered_false(make_client: MakeClient, cloud: CloudDouble) -> None:
    cloud.script["CertificateAuthorityRequests/uploadRevocationResults"].append(Scripted(200, {"value": False}))
    assert make_client().client.upload_revocation_results([RevocationResult("c", True)]) is False


def test_upload_nothing_is_misuse(make_client: MakeClient, cloud: CloudDouble) -> None:
    with pytest.raises(ValueError):
        make_client().client.upload_revocation_results([])
    assert not cloud.calls
