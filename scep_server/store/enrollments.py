"""An enrollment decided at once, stored in one database transaction.

For validators that decide locally and need not confirm the issuance (``static``), the transaction, its
certificate, its audit record and its row of the audit chain are written together, ISSUED: one write (one
fsync on SQLite) per enrollment instead of a claim, a link, a completion and an audit record. The
transaction must not exist yet; a concurrent request of the same transaction that got in first makes
this one store nothing (``TransactionExists``), and the certificate it signed is then kept as withdrawn
(``record_withdrawn``), so that a certificate signed for a transaction another request won is on record,
revoked. When the database fails, nothing of the enrollment is stored, and its certificate must not be
handed out.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from scep_server.errors import StoreError
from scep_server.store.audit import event_row
from scep_server.store.audit_chain import SCEP, AuditAction, append, issue_entry
from scep_server.store.base import Repository, aware, check_length, describe, guard, required, utcnow
from scep_server.store.certificates import certificate_query, certificate_values
from scep_server.store.records import (
    AuditEvent,
    DuplicateCertificate,
    NewCertificate,
    NewTransaction,
    TransactionExists,
    TransactionState,
)
from scep_server.store.revocations import revocation, revocation_entry
from scep_server.store.tables import DIGEST_LENGTH, IP_LENGTH, certificates, scep_events, transactions
from scep_server.store.transactions import check_key, claim_values, transaction_key

# Built once: the parameters are bound per call, so each enrollment skips constructing the statements.
INSERT_CERTIFICATE = insert(certificates)
INSERT_TRANSACTION = insert(transactions)
INSERT_EVENT = insert(scep_events)


class EnrollmentRepository(Repository):
    """Enrollments stored in one database transaction."""

    def record_enrollment(self, transaction: NewTransaction, certificate: NewCertificate, event: AuditEvent) -> None:
        """Store the transaction ISSUED with its certificate and its audit record, all or nothing.

        ``TransactionExists`` when the transaction is stored already, ``DuplicateCertificate`` when the
        serial is taken, ``StoreUnavailable`` or ``StoreError`` when the database fails (no write turn, a
        lost connection, a failed statement); nothing is stored then.
        """
        _check_transaction(transaction)
        if (certificate.profile, certificate.transaction_id) != (transaction.profile, transaction.transaction_id):
            raise ValueError("the certificate must name its profile and transaction")
        values = certificate_values(certificate)
        events = event_row(event)
        with guard():
            try:
                with self._writer.begin() as conn:
                    cert_id = required(conn.execute(INSERT_CERTIFICATE, values).inserted_primary_key)[0]
                    conn.execute(INSERT_TRANSACTION, _issued_values(transaction, values["serial_hex"], cert_id))
                    conn.execute(INSERT_EVENT, events)
                    append(conn, issue_entry(certificate))
            except IntegrityError as exc:
                self._raise_conflict(exc, transaction, certificate)

    def record_withdrawn(self, certificate: NewCertificate, *, reason: int, revoked_at: datetime) -> None:
        """Store a certificate that was signed and never handed out as revoked (``reason``)."""
        values = {**certificate_values(certificate), **revocation(reason, revoked_at)}
        entry = revocation_entry(SCEP, AuditAction.CERTIFICATE_WITHDRAW, certificate.serial, certificate.issuer,
                                 reason, profile=certificate.profile, transaction_id=certificate.transaction_id)
        with guard(), self._writer.begin() as conn:
            conn.execute(INSERT_CERTIFICATE, values)
            append(conn, entry)

    def _raise_conflict(self, exc: IntegrityError, transaction: NewTransaction, certificate: NewCertificate) -> None:
        with self._engine.connect() as conn:
            if _transaction_exists(conn, transaction):
                raise TransactionExists(transaction.profile, transaction.transaction_id) from None
            if conn.execute(certificate_query(certificate.serial, certificate.issuer)).first() is not None:
                raise DuplicateCertificate(certificate.serial, certificate.issuer) from None
        raise StoreError(describe(exc)) from exc


def _check_transaction(transaction: NewTransaction) -> None:
    check_key(transaction.profile, transaction.transaction_id)
    check_length(transaction.requester_ip, IP_LENGTH, "requester_ip")
    for digest in (transaction.signer_key_sha256, transaction.subject_sha256):
        check_length(digest, DIGEST_LENGTH, "digest")


def _issued_values(transaction: NewTransaction, hex_serial: str, cert_id: int) -> dict[str, object]:
    now = utcnow()
    claimed = claim_values(
        transaction.message_type, transaction.csr_der, transaction.requester_ip,
        transaction.signer_key_sha256, transaction.subject_sha256,
    )
    return {
        **claimed,
        "profile": transaction.profile,
        "transaction_id": transaction.transaction_id,
        "state": TransactionState.ISSUED.value,
        "serial_hex": hex_serial,
        "certificate_id": cert_id,
        "csr_der": None,  # the request may carry a shared secret: keep only its hash once decided
        "created_at": aware(transaction.received_at, "received_at") if transaction.received_at else now,
        "updated_at": now,
    }


def _transaction_exists(conn: Connection, transaction: NewTransaction) -> bool:
    query = select(transactions.c.id).where(transaction_key(transaction.profile, transaction.transaction_id))
    return conn.execute(query).first() is not None
