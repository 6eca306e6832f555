"""Message values and shapes without I/O (intune-api.md §5, §6)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from scep_server.errors import IntuneProtocolError
from scep_server.intune.messages import (
    NotificationResult,
    RevocationResult,
    RevocationResultCode,
    ScepResultCode,
    ValidationRequest,
    ValidationResult,
    certificate_expiration,
    certificate_serial,
    certificate_thumbprint,
    hresult_value,
    revocation_requests,
    upload_accepted,
)
from tests.support.pki import self_signed

KEY = ec.generate_private_key(ec.SECP256R1())


def _certificate(serial: int, not_after: dt.datetime) -> x509.Certificate:
    return self_signed("x", KEY, serial=serial, not_before=dt.datetime(2018, 1, 1, tzinfo=dt.UTC), not_after=not_after)


@pytest.mark.parametrize(
    ("serial", "shown"),
    [(1, "01"), (0x7F, "7F"), (0x80, "0080"), (0xABC, "0ABC"), (0x1234567890ABCDEF, "1234567890ABCDEF"),
     (0xFF << 144, "00FF" + "00" * 18)],
)
def test_serial_as_windows_shows_it(serial: int, shown: str) -> None:
    certificate = _certificate(serial, dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    assert certificate_serial(certificate) == shown
    assert int(shown, 16) == serial


def test_thumbprint_and_expiration() -> None:
    certificate = _certificate(5, dt.datetime(2018, 6, 11, 16, 11, 20, 90477, tzinfo=dt.UTC))
    assert certificate_thumbprint(certificate) == certificate.fingerprint(hashes.SHA1()).hex().upper()
    assert len(certificate_thumbprint(certificate)) == 40
    assert certificate_expiration(certificate) == "2018-06-11T16:11:20.0000000Z"  # DER time has whole seconds
    whole = _certificate(5, dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert certificate_expiration(whole) == "2030-01-02T03:04:05.0000000Z"


@pytest.mark.parametrize(
    ("given", "sent"),
    [(0x80004005, 2147500037), (-2147467259, 2147500037), (0, 0), (1, 1), (0xFFFFFFFF, 0xFFFFFFFF),
     (-(2**31), 0x80000000)],
)
def test_hresult_sent_unsigned(given: int, sent: int) -> None:
    assert hresult_value(given) == sent


@pytest.mark.parametrize("bad", [2**32, -(2**31) - 1, True])
def test_hresult_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError):
        hresult_value(bad)


def test_results_parse_codes() -> None:
    assert ValidationResult.from_json({"code": "Success", "errorDescription": None}, "a").succeeded
    unknown = ValidationResult.from_json({"code": "SomethingNew", "errorDescription": "?"}, "a")
    assert not unknown.succeeded and unknown.code == "SomethingNew"
    assert NotificationResult.from_json({"code": ScepResultCode.SUCCESS}, "a").succeeded
    body: object
    for body in [None, [], {"code": 1}, {"errorDescription": "x"}, {"code": "Success", "errorDescription": 5}]:
        with pytest.raises(IntuneProtocolError):
            ValidationResult.from_json(body, "a")


def test_validation_request_needs_values() -> None:
    with pytest.raises(ValueError):
        ValidationRequest("", b"\x30", "p").to_json()
    with pytest.raises(ValueError):
        ValidationRequest("t", b"", "p").to_json()
    assert "csr_der" not in repr(ValidationRequest("t", b"\x30secret", "p"))


def test_revocation_result_rules() -> None:
    assert RevocationResult("c", True).to_json()["errorCode"] == "0"
    assert RevocationResult("c", False, 4005, "already revoked").to_json()["errorCode"] == "4005"
    for bad in [("c", True, 4000), ("c", False, 0), ("c", False, 1234), ("", True, 0)]:
        with pytest.raises(ValueError):
            RevocationResult(*bad)


def test_revocation_codes() -> None:
    assert int(RevocationResultCode.AUTHENTICATION_EXCEPTION) == 4103
    assert {c for c in RevocationResultCode if c.retryable} == {
        RevocationResultCode.RETRYABLE_SERVICE_EXCEPTION, RevocationResultCode.SERVICE_UNAVAILABLE_EXCEPTION,
        RevocationResultCode.SERVICE_TOO_BUSY_EXCEPTION, RevocationResultCode.AUTHENTICATION_EXCEPTION}
    assert not RevocationResultCode.CONFLICT_ERROR.retryable


def test_revocation_answer_shapes() -> None:
    with pytest.raises(IntuneProtocolError):
        revocation_requests({"value": "nope"})
    with pytest.raises(IntuneProtocolError):
        revocation_requests({"value": [{"requestContext": "c", "serialNumber": "01", "issuerName": 3}]})
    assert revocation_requests({"value": [{"requestContext": "c", "serialNumber": "01"}]})[0].issuer_name is None
    with pytest.raises(IntuneProtocolError):
        upload_accepted({"value": "true"})
