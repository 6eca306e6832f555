"""Request and answer bodies of the Intune third-party CA API (intune-api.md §5, §6).

Pure data: building the JSON bodies Intune expects and checking the answers it gives. No I/O. A body
that does not have the documented shape raises :class:`~scep_server.errors.IntuneProtocolError`;
misuse by the caller (an out-of-range value) raises ``ValueError``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from scep_server.errors import IntuneProtocolError
from scep_server.intune.contract import ScepResultCode

__all__ = [
    "FailureNotification",
    "NotificationResult",
    "RevocationRequest",
    "RevocationResult",
    "RevocationResultCode",
    "ScepResultCode",
    "SuccessNotification",
    "ValidationRequest",
    "ValidationResult",
    "certificate_expiration",
    "certificate_serial",
    "certificate_thumbprint",
    "hresult_value",
]

ERROR_DESCRIPTION_MAX = 255  # Microsoft's libraries document "Max length = 255 chars"
MAX_REVOCATION_REQUESTS = 500


class RevocationResultCode(IntEnum):
    """Result codes of a revocation request (intune-api.md §6)."""

    NONE = 0
    NON_RETRYABLE_SERVICE_EXCEPTION = 4000
    DATA_SERIALIZATION_ERROR = 4001
    PARAMETER_DATA_INVALID_ERROR = 4002
    CRYPTOGRAPHY_ERROR = 4003
    CERTIFICATE_NOT_FOUND_ERROR = 4004
    CONFLICT_ERROR = 4005
    NOT_SUPPORTED_ERROR = 4006
    PAYLOAD_TOO_LARGE_ERROR = 4007
    RETRYABLE_SERVICE_EXCEPTION = 4100
    SERVICE_UNAVAILABLE_EXCEPTION = 4101
    SERVICE_TOO_BUSY_EXCEPTION = 4102
    AUTHENTICATION_EXCEPTION = 4103

    @property
    def retryable(self) -> bool:
        """Codes 41xx tell Intune it may send the request again."""
        return 4100 <= self.value < 4200


# --- values derived from an issued certificate (intune-api.md §5, successNotification) ---------------


def certificate_thumbprint(certificate: x509.Certificate) -> str:
    """Upper-case hex SHA-1 of the DER certificate, as Windows shows a thumbprint."""
    return certificate.fingerprint(hashes.SHA1()).hex().upper()


def certificate_serial(certificate: x509.Certificate) -> str:
    """Upper-case hex of the serial's DER INTEGER content octets, as Windows (certutil, ADCS) shows it.

    Always an even number of digits, with the leading ``00`` a positive serial whose top bit is set
    carries in DER; ``int(value, 16)`` gives the serial back.
    """
    serial = certificate.serial_number
    magnitude = serial.bit_length() if serial >= 0 else (~serial).bit_length()
    return serial.to_bytes(magnitude // 8 + 1, "big", signed=True).hex().upper()


def certificate_expiration(certificate: x509.Certificate) -> str:
    """notAfter as ISO-8601 UTC with 7 fractional digits, like ``2018-06-11T16:11:20.0904778Z``."""
    return expiration_of(certificate.not_valid_after_utc)


def hresult_value(hresult: int) -> int:
    """The HRESULT as the non-negative number Microsoft's C# library sends (0x80004005 → 2147500037).

    intune-api.md §5 says "a 32-bit HRESULT as a number"; the C# library declares it ``long`` and its
    callers pass unsigned literals, so the wire value is the unsigned 32-bit one. A signed value
    (-2147467259, as an ``int`` HRESULT prints) is accepted and sent as its unsigned equivalent.
    """
    if isinstance(hresult, bool) or not -(2**31) <= hresult < 2**32:
        raise ValueError(f"hresult must be a 32-bit value, not {hresult!r}")
    return hresult & 0xFFFFFFFF


def _b64(der: bytes) -> str:
    if not der:
        raise ValueError("the certificate request is empty")
    return base64.b64encode(der).decode("ascii")


def _required(name: str, value: str) -> str:
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


# --- ScepRequestValidationFEService bodies (intune-api.md §5) -----------------------------------------


@dataclass(frozen=True, slots=True)
class ValidationRequest:
    """Body of ``ScepActions/validateRequest``."""

    transaction_id: str
    csr_der: bytes = field(repr=False)  # carries the challenge: keep it out of reprs and logs
    caller_info: str

    def to_json(self) -> dict[str, Any]:
        return {
            "request": {
                "transactionId": _required("transaction_id", self.transaction_id),
                "certificateRequest": _b64(self.csr_der),
                "callerInfo": self.caller_info,
            }
        }


@dataclass(frozen=True, slots=True)
class SuccessNotification:
    """Body of ``ScepActions/successNotification``: the certificate issued for a validated request."""

    transaction_id: str
    csr_der: bytes = field(repr=False)  # carries the challenge: keep it out of reprs and logs
    certificate: x509.Certificate
    issuing_ca: str
    ca_configuration: str
    certificate_authority: str
    caller_info: str

    def to_json(self) -> dict[str, Any]:
        return {
            "notification": {
                "transactionId": _required("transaction_id", self.transaction_id),
                "certificateRequest": _b64(self.csr_der),
                "certificateThumbprint": certificate_thumbprint(self.certificate),
                "certificateSerialNumber": certificate_serial(self.certificate),
                "certificateExpirationDateUtc": certificate_expiration(self.certificate),
                "issuingCertificateAuthority": _required("issuing_ca", self.issuing_ca),
                "callerInfo": self.caller_info,
                "caConfiguration": self.ca_configuration,
                "certificateAuthority": self.certificate_authority,
            }
        }


@dataclass(frozen=True, slots=True)
class FailureNotification:
    """Body of ``ScepActions/failureNotification``: no certificate was issued, and why."""

    transaction_id: str
    csr_der: bytes = field(repr=False)  # carries the challenge: keep it out of reprs and logs
    hresult: int
    description: str
    caller_info: str

    def to_json(self) -> dict[str, Any]:
        return {
            "notification": {
                "transactionId": _required("transaction_id", self.transaction_id),
                "certificateRequest": _b64(self.csr_der),
                "hResult": hresult_value(self.hresult),
                "errorDescription": _required("description", self.description)[:ERROR_DESCRIPTION_MAX],
                "callerInfo": self.caller_info,
            }
        }


def _scep_answer(body: Any) -> tuple[str, str]:
    """``{"code": C, "errorDescription": D}``: every ScepActions answer (intune-api.md §5)."""
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        raise IntuneProtocolError("Intune answered without a string 'code'")
    description = body.get("errorDescription")
    if description is not None and not isinstance(description, str):
        raise IntuneProtocolError("Intune answered a non-string 'errorDescription'")
    return body["code"], description or ""


@dataclass(frozen=True, slots=True)
class ScepActionResult:
    """Intune's answer to validateRequest or a notification; only ``code == "Success"`` is success
    (an unknown code is a failure, so a request is never issued on one)."""

    code: str
    description: str
    activity_id: str

    @property
    def succeeded(self) -> bool:
        return self.code == ScepResultCode.SUCCESS

    @classmethod
    def from_json(cls, body: Any, activity_id: str) -> ScepActionResult:
        code, description = _scep_answer(body)
        return cls(code, description, activity_id)


# The same answer shape, named for the call that gets it.
ValidationResult = ScepActionResult
NotificationResult = ScepActionResult


# --- PkiConnectorFEService bodies (intune-api.md §6) --------------------------------------------------


def download_parameters(max_requests: int, issuer_name: str | None) -> dict[str, Any]:
    """Body of ``CertificateAuthorityRequests/downloadRevocationRequests``."""
    if isinstance(max_requests, bool) or not 1 <= max_requests <= MAX_REVOCATION_REQUESTS:
        raise ValueError(f"max_requests must be 1-{MAX_REVOCATION_REQUESTS}, not {max_requests!r}")
    return {"downloadParameters": {"maxRequests": max_requests, "issuerName": issuer_name}}


def _optional_str(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise IntuneProtocolError(f"revocation request field {key!r} is not a string")
    return value


@dataclass(frozen=True, slots=True)
class RevocationRequest:
    """One certificate Intune asks the CA to revoke; ``serial_number`` is hex as Intune sends it."""

    request_context: str
    serial_number: str
    issuer_name: str | None
    ca_configuration: str | None

    @classmethod
    def from_json(cls, item: Any) -> RevocationRequest:
        if not isinstance(item, dict):
            raise IntuneProtocolError("a revocation request is not an object")
        context, serial = item.get("requestContext"), item.get("serialNumber")
        if not isinstance(context, str) or not context or not isinstance(serial, str) or not serial:
            raise IntuneProtocolError("a revocation request lacks requestContext or serialNumber")
        return cls(context, serial, _optional_str(item, "issuerName"), _optional_str(item, "caConfiguration"))


def revocation_requests(body: Any) -> list[RevocationRequest]:
    """``{"value": [...]}`` of downloadRevocationRequests."""
    if not isinstance(body, dict) or not isinstance(body.get("value"), list):
        raise IntuneProtocolError("downloadRevocationRequests answered without a 'value' list")
    return [RevocationRequest.from_json(item) for item in body["value"]]


@dataclass(frozen=True, slots=True)
class RevocationResult:
    """What the CA did with one revocation request; success goes with code 0, failure with any other."""

    request_context: str
    succeeded: bool
    error_code: int = RevocationResultCode.NONE
    error_message: str = ""

    def __post_init__(self) -> None:
        code = RevocationResultCode(self.error_code)  # ValueError for a code §6 does not define
        if self.succeeded != (code == RevocationResultCode.NONE):
            raise ValueError("succeeded=True requires error_code 0, succeeded=False a non-zero error_code")
        _required("request_context", self.request_context)

    def to_json(self) -> dict[str, Any]:
        return {
            "requestContext": self.request_context,
            "succeeded": self.succeeded,
            "errorCode": str(int(self.error_code)),
            "errorMessage": self.error_message,
        }


def upload_body(results: list[RevocationResult]) -> dict[str, Any]:
    """Body of ``CertificateAuthorityRequests/uploadRevocationResults``."""
    if not results:
        raise ValueError("there are no revocation results to upload")
    return {"results": [result.to_json() for result in results]}


def upload_accepted(body: Any) -> bool:
    """``{"value": true}``; ``false`` means Intune did not record the results."""
    if not isinstance(body, dict) or not isinstance(body.get("value"), bool):
        raise IntuneProtocolError("uploadRevocationResults answered without a boolean 'value'")
    return bool(body["value"])


def expiration_of(moment: datetime) -> str:
    """Format any aware datetime the way :func:`certificate_expiration` does."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
