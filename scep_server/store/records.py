"""The values the store takes and hands back, and its error types."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ..errors import StoreError


class CertStatus(StrEnum):
    VALID = "valid"
    REVOKED = "revoked"


class TransactionState(StrEnum):
    """Server-side state of a SCEP enrolment; answered as pkiStatus PENDING, SUCCESS or FAILURE."""

    PENDING = "pending"
    ISSUED = "issued"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class NewCertificate:
    """A certificate the CA has just signed, as handed to ``Store.record_issued``."""

    serial: int
    issuer: str
    subject: str
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    profile: str
    transaction_id: str | None
    requester_ip: str | None
    der: bytes
    sha1_thumbprint: str
    sha256_thumbprint: str


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """A stored certificate; datetimes are UTC-aware."""

    serial: int
    issuer: str
    subject: str
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    profile: str
    transaction_id: str | None
    requester_ip: str | None
    der: bytes
    sha1_thumbprint: str
    sha256_thumbprint: str
    status: CertStatus
    issued_at: datetime
    revoked_at: datetime | None
    revocation_reason: int | None


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """One SCEP PKCSReq/RenewalReq transaction, unique per (profile, transaction_id)."""

    profile: str
    transaction_id: str
    message_type: int
    state: TransactionState
    csr_sha256: str | None
    csr_der: bytes | None
    serial: int | None
    fail_info: int | None
    fail_reason: str | None
    requester_ip: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OperationRecord:
    """One entry of the append-only log of SCEP PKIOperation requests."""

    occurred_at: datetime
    profile: str
    operation: str
    message_type: int | None
    transaction_id: str | None
    outcome: str
    detail: str | None
    requester_ip: str | None


class CertificateNotFound(StoreError):
    """No certificate with this serial number from this issuer."""

    def __init__(self, serial: int, issuer: str) -> None:
        super().__init__(f"no certificate with serial {serial:x} issued by {issuer}")
        self.serial = serial
        self.issuer = issuer


class AlreadyRevoked(StoreError):
    """The certificate was revoked before; ``certificate`` is its stored state."""

    def __init__(self, certificate: CertificateRecord) -> None:
        super().__init__(f"certificate {certificate.serial:x} is already revoked")
        self.certificate = certificate


class DuplicateCertificate(StoreError):
    """The issuer already has a certificate with this serial number."""

    def __init__(self, serial: int, issuer: str) -> None:
        super().__init__(f"issuer {issuer} already has a certificate with serial {serial:x}")
        self.serial = serial
        self.issuer = issuer


class TransactionNotPending(StoreError):
    """The transaction is missing (``state`` None) or no longer PENDING, so it cannot be completed."""

    def __init__(self, profile: str, transaction_id: str, state: TransactionState | None) -> None:
        found = "does not exist" if state is None else f"is {state.value}"
        super().__init__(f"transaction {transaction_id!r} of profile {profile!r} {found}")
        self.profile = profile
        self.transaction_id = transaction_id
        self.state = state
