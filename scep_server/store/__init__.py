"""Persistence: SQLAlchemy Core tables, typed repository functions, Alembic migrations."""

from __future__ import annotations

from scep_server.store.intune_revocations import IntuneRevocationRecord
from scep_server.store.records import (
    AlreadyRevoked,
    CertificateNotFound,
    CertificateRecord,
    CertStatus,
    DuplicateCertificate,
    NewCertificate,
    OperationRecord,
    OutboxEntryNotPending,
    OutboxRecord,
    OutboxState,
    TransactionNotPending,
    TransactionRecord,
    TransactionState,
)
from scep_server.store.repository import Store, parse_serial_hex, serial_hex, serial_storable

__all__ = [
    "AlreadyRevoked",
    "CertStatus",
    "CertificateNotFound",
    "CertificateRecord",
    "DuplicateCertificate",
    "IntuneRevocationRecord",
    "NewCertificate",
    "OperationRecord",
    "OutboxEntryNotPending",
    "OutboxRecord",
    "OutboxState",
    "Store",
    "TransactionNotPending",
    "TransactionRecord",
    "TransactionState",
    "parse_serial_hex",
    "serial_hex",
    "serial_storable",
]
