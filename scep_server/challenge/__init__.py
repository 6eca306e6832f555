"""Challenge validators: decide whether a certification request may be issued.

A validator sees the SCEP transactionID and the DER CSR (which carries the challengePassword) — the
inputs Intune's validateRequest takes — and either returns (accept), raises
:class:`~scep_server.errors.ChallengeRejected` (a definite no, with the validator's reason code) or raises
:class:`~scep_server.errors.UpstreamError` (could not decide now: the caller may answer PENDING and retry).
Validators may block for hundreds of milliseconds; they are called outside any database transaction.
After issuance the validator is told the outcome (Intune wants success/failure notifications).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = ["ChallengeValidator", "IssuedCertificate", "ValidationRequest", "challenge_password"]


@dataclass(frozen=True, slots=True)
class ValidationRequest:
    """What a validator decides on."""

    profile: str
    transaction_id: str
    csr: x509.CertificateSigningRequest
    csr_der: bytes
    requester_ip: str | None


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """What a validator is told after a certificate was issued and stored."""

    certificate: x509.Certificate
    issuer: x509.Certificate
    ca_name: str


@runtime_checkable
class ChallengeValidator(Protocol):
    """The plug-in interface every challenge validator implements."""

    name: str
    # Whether a RenewalReq (authenticated by the certificate it renews) is validated too.
    validates_renewals: bool

    def validate(self, request: ValidationRequest) -> None:
        """Return to accept; raise ChallengeRejected to refuse, UpstreamError when undecided."""

    def notify_issued(self, request: ValidationRequest, issued: IssuedCertificate) -> None:
        """Called once the certificate is stored; raising UpstreamError means 'do not deliver it'."""

    def notify_failed(self, request: ValidationRequest, hresult: int, description: str) -> None:
        """Called when issuance failed after a successful validation."""


def challenge_password(csr: x509.CertificateSigningRequest) -> str | None:
    """The challengePassword attribute (PKCS#9, RFC 2985 §5.4.1) of a CSR, or None.

    None too when the attribute appears more than once, holds more than one value, or is not a
    DirectoryString (IA5String is read as well: older clients send it). A secret sent as an OCTET STRING
    is not a challenge, and a BMPString is read as the UTF-16 it is.
    """
    der = csr.public_bytes(serialization.Encoding.DER)
    attributes = asn1_csr.CertificationRequest.load(der)["certification_request_info"]["attributes"]
    found = [attribute for attribute in attributes if attribute["type"].native == "challenge_password"]
    if len(found) != 1:
        return None
    try:
        values = found[0]["values"]
        value = values[0].native if len(values) == 1 else None
    except (ValueError, TypeError, KeyError):  # a value that is not one of the string types
        return None
    return value if isinstance(value, str) else None
