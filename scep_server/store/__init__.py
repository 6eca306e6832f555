"""Persistence: SQLAlchemy Core tables, typed repositories composed into one ``Store``, Alembic migrations."""

from __future__ import annotations

from scep_server.store.audit_chain import Actor, AuditAction, AuditEntry, AuditRecord, ChainBreak, VerifyReport
from scep_server.store.intune_revocations import IntuneRevocationRecord
from scep_server.store.records import (
    AlreadyRevoked,
    AuditEvent,
    CertificateNotFound,
    CertificateRecord,
    CertStatus,
    DuplicateCertificate,
    NewCertificate,
    NewTransaction,
    OperationRecord,
    OutboxEntryNotPending,
    OutboxRecord,
    OutboxState,
    TransactionExists,
    TransactionNotPending,
    TransactionRecord,
    TransactionState,
)
from scep_server.store.repository import Store
from scep_server.store.serials import MAX_SERIAL_BITS, parse_serial_hex, serial_hex, serial_storable
from scep_server.store.steps import EnrollmentStep, StepRecord, TransactionSearch, TransactionSummary

__all__ = [
    "MAX_SERIAL_BITS",
    "Actor",
    "AlreadyRevoked",
    "AuditAction",
    "AuditEntry",
    "AuditEvent",
    "AuditRecord",
    "CertStatus",
    "CertificateNotFound",
    "CertificateRecord",
    "ChainBreak",
    "DuplicateCertificate",
    "EnrollmentStep",
    "IntuneRevocationRecord",
    "NewCertificate",
    "NewTransaction",
    "OperationRecord",
    "OutboxEntryNotPending",
    "OutboxRecord",
    "OutboxState",
    "StepRecord",
    "Store",
    "TransactionExists",
    "TransactionNotPending",
    "TransactionRecord",
    "TransactionSearch",
    "TransactionState",
    "TransactionSummary",
    "VerifyReport",
    "parse_serial_hex",
    "serial_hex",
    "serial_storable",
]
