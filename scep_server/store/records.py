"""The values the store takes and hands back, and its error types."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from scep_server.errors import Conflict, NotFound


class CertStatus(StrEnum):
    VALID = "valid"
    REVOKED = "revoked"


class TransactionState(StrEnum):
    """Server-side state of a SCEP enrolment; answered as pkiStatus PENDING, SUCCESS or FAILURE."""

    PENDING = "pending"
    ISSUED = "issued"
    FAILED = "failed"


class OutboxState(StrEnum):
    """Where an outbox entry stands; PENDING entries are still to be delivered."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class NewTransaction:
    """A SCEP transaction as first claimed (see ``Store.claim_transaction`` for the fields)."""

    profile: str
    transaction_id: str
    message_type: int
    csr_der: bytes
    requester_ip: str | None
    signer_key_sha256: str | None
    subject_sha256: str | None
    # When the request arrived: a transaction decided and stored in one step is written only at its end.
    received_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One PKIOperation for the audit log (see ``Store.record_operation``); never a secret in ``detail``."""

    profile: str
    operation: str
    message_type: int | None
    transaction_id: str | None
    outcome: str
    detail: str | None
    requester_ip: str | None


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
    # The device behind the certificate (ca/device_ids.py): a lowercase GUID, and ``intune`` (Intune's
    # managed device id) or ``entra`` (the Entra ID device id); None when it names none.
    device_id: str | None = field(default=None, kw_only=True)
    device_id_kind: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class CertificateRecord(NewCertificate):
    """A stored certificate: what was handed to the store plus its state; datetimes are UTC-aware.

    ``device_hold_at``: since when OCSP answers it revoked (certificateHold) because its device is
    disabled (an ``ocsp-only`` profile's device lifecycle sync); the CRL does not list it."""

    status: CertStatus
    issued_at: datetime
    revoked_at: datetime | None
    revocation_reason: int | None
    device_hold_at: datetime | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """One SCEP PKCSReq/RenewalReq transaction, unique per (profile, transaction_id).

    ``serial`` names the transaction's certificate: delivered when ISSUED; on a PENDING transaction it
    was stored but not delivered yet (being acknowledged, or its handler died: a reclaim re-delivers it).
    A ``deferred`` transaction is PENDING because its challenge could not be decided yet; a background
    worker retries it at ``next_attempt_at``. ``attempts`` counts the failed tries, ``last_error`` says
    why the last one failed. ``signer_key_sha256`` and ``subject_sha256`` identify who may poll it
    (hex SHA-256 of the request signer's SubjectPublicKeyInfo and of the CSR subject's comparison
    form); None on transactions stored before they were recorded.
    """

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
    deferred: bool = False
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    signer_key_sha256: str | None = None
    subject_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """A notification that must reach Intune; ``payload`` is the JSON object it carries."""

    id: int
    kind: str
    transaction_id: str | None
    payload: dict[str, Any]
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    dead_at: datetime | None
    last_error: str | None

    @property
    def state(self) -> OutboxState:
        if self.delivered_at is not None:
            return OutboxState.DELIVERED
        if self.dead_at is not None:
            return OutboxState.DEAD
        return OutboxState.PENDING


@dataclass(frozen=True, slots=True)
class OperationRecord(AuditEvent):
    """One entry of the append-only log of SCEP PKIOperation requests: the event and when it was stored."""

    occurred_at: datetime


class CertificateNotFound(NotFound):
    """No certificate with this serial number from this issuer."""

    def __init__(self, serial: int, issuer: str) -> None:
        super().__init__(f"no certificate with serial {serial:x} issued by {issuer}")
        self.serial = serial
        self.issuer = issuer


class AlreadyRevoked(Conflict):
    """The certificate was revoked before; ``certificate`` is its stored state."""

    def __init__(self, certificate: CertificateRecord) -> None:
        super().__init__(f"certificate {certificate.serial:x} is already revoked")
        self.certificate = certificate


class DuplicateCertificate(Conflict):
    """The issuer already has a certificate with this serial number."""

    def __init__(self, serial: int, issuer: str) -> None:
        super().__init__(f"issuer {issuer} already has a certificate with serial {serial:x}")
        self.serial = serial
        self.issuer = issuer


class TransactionExists(Conflict):
    """The transaction was already stored (by a concurrent request of it, say): ``record_enrollment``
    stored nothing."""

    def __init__(self, profile: str, transaction_id: str) -> None:
        super().__init__(f"transaction {transaction_id!r} of profile {profile!r} exists already")
        self.profile = profile
        self.transaction_id = transaction_id


class TransactionNotPending(Conflict):
    """The transaction is missing (``state`` None) or not in the state the change needs.

    Mostly that is PENDING (it was completed by another handler); ``fail_issued_transaction`` needs
    ISSUED, the retries of a deferred transaction need it PENDING and deferred, and
    ``record_undelivered`` needs it PENDING for the same CSR without a certificate yet.
    """

    def __init__(self, profile: str, transaction_id: str, state: TransactionState | None) -> None:
        found = "does not exist" if state is None else f"is {state.value}"
        super().__init__(f"transaction {transaction_id!r} of profile {profile!r} {found}")
        self.profile = profile
        self.transaction_id = transaction_id
        self.state = state


class OutboxEntryNotPending(Conflict):
    """The outbox entry is missing (``state`` None) or was already delivered or given up on."""

    def __init__(self, outbox_id: int, state: OutboxState | None) -> None:
        found = "does not exist" if state is None else f"is {state.value}"
        super().__init__(f"outbox entry {outbox_id} {found}")
        self.outbox_id = outbox_id
        self.state = state
