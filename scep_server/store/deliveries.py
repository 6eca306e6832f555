"""Storing an issued certificate for its SCEP transaction and settling whether it is delivered.

A certificate is stored first and its transaction completed (ISSUED) only once it may be handed out, so
a handler that dies in between leaves it findable: linked to the PENDING transaction, re-delivered by
the next claim for the same CSR, or withdrawn (revoked) when it must not be delivered or nobody came
back for it. Each of these changes appends its audit row (``audit_chain.py``) in its own transaction.
Changes that read a transaction and write its certificate lock the transaction row first
(PostgreSQL ``FOR UPDATE``; SQLite's write transactions hold the database lock already), so they cannot
interleave with one another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from scep_server.errors import StoreError
from scep_server.store.audit_chain import BACKGROUND, SCEP, AuditAction, append, issue_entry
from scep_server.store.base import Repository, aware, check_page, describe, guard, required, utcnow
from scep_server.store.certificates import (
    VALID_CERT,
    certificate_key,
    certificate_query,
    certificate_record,
    certificate_values,
)
from scep_server.store.records import (
    AlreadyRevoked,
    CertificateNotFound,
    CertificateRecord,
    CertStatus,
    DuplicateCertificate,
    NewCertificate,
    TransactionRecord,
    TransactionState,
)
from scep_server.store.revocations import UNDELIVERED_REASON, revocation, revocation_entry
from scep_server.store.serials import serial_hex
from scep_server.store.tables import certificates, transactions
from scep_server.store.transactions import (
    PENDING,
    next_version,
    transaction_key,
    transaction_record,
    update_transaction,
)

# Links a just-inserted certificate (by its row id) to its transaction, inside the inserting transaction.
Link = Callable[[Connection, int], None]


class DeliveryRepository(Repository):
    """Issued certificates and the transactions they are delivered by."""

    def record_issued(
        self, *, profile: str, transaction_id: str | None, certificate: NewCertificate
    ) -> CertificateRecord:
        """Store the certificate and mark its transaction ISSUED, both or neither.

        Raises ``DuplicateCertificate`` if the serial is taken and ``TransactionNotPending`` if the
        transaction is missing or no longer PENDING (another handler finished it first).
        """
        values = certificate_values(certificate)

        def complete(conn: Connection, cert_id: int) -> None:
            if transaction_id is not None:
                _complete(conn, profile, transaction_id, values["serial_hex"], cert_id)

        return self._store(certificate, values, complete)

    def record_undelivered(
        self, *, profile: str, transaction_id: str, csr_sha256: str, certificate: NewCertificate
    ) -> CertificateRecord:
        """Store a certificate for its PENDING transaction, which stays PENDING until ``complete_transaction``.

        The certificate is linked to the transaction (``TransactionRecord.serial``) in the same database
        transaction, so a handler that dies before delivering it leaves it findable: the next claim for
        the same CSR re-delivers it instead of issuing a second one. Nothing is stored, and
        ``TransactionNotPending`` raised, unless the transaction is PENDING for this CSR and holds no
        certificate yet (a reclaimer got there first); ``DuplicateCertificate`` if the serial is taken.
        """
        if certificate.profile != profile or certificate.transaction_id != transaction_id:
            raise ValueError("the certificate must name its profile and transaction")
        values = certificate_values(certificate)
        free = PENDING & (transactions.c.csr_sha256 == csr_sha256) & transactions.c.serial_hex.is_(None)

        def link(conn: Connection, cert_id: int) -> None:
            changes = {"serial_hex": values["serial_hex"], "certificate_id": cert_id, "updated_at": utcnow()}
            update_transaction(conn, free, profile, transaction_id, changes)

        return self._store(certificate, values, link)

    def complete_transaction(
        self, *, profile: str, transaction_id: str, serial: int, issuer: str, csr_sha256: str | None = None
    ) -> None:
        """Mark a PENDING transaction ISSUED with a certificate already stored (``record_undelivered``, or
        ``record_issued`` without a transaction): it is recorded first, and handed out only once this is done.

        Completing it again with the same certificate changes nothing (two handlers delivering the one
        certificate of a reclaimed transaction). ``TransactionNotPending`` when another handler finished
        the transaction otherwise, or (with ``csr_sha256``) it was reclaimed for another request in the
        meantime; ``CertificateNotFound`` when the certificate is not stored; ``AlreadyRevoked`` when it
        was revoked (withdrawn) meanwhile: it must not be delivered.
        """
        with guard(), self._writer.begin() as conn:
            current = _lock_transaction(conn, profile, transaction_id)
            row = conn.execute(select(certificates).where(certificate_key(serial, issuer))).one_or_none()
            if row is None:
                raise CertificateNotFound(serial, issuer)
            if current is not None and current.state is TransactionState.ISSUED and current.serial == serial:
                return
            if row.status != CertStatus.VALID.value:
                raise AlreadyRevoked(certificate_record(row))
            condition = PENDING if csr_sha256 is None else PENDING & (transactions.c.csr_sha256 == csr_sha256)
            _complete(conn, profile, transaction_id, serial_hex(serial), int(row.id), condition)

    def withdraw_undelivered(
        self, *, profile: str, transaction_id: str, serial: int, issuer: str, reason: int, revoked_at: datetime
    ) -> bool:
        """Revoke a certificate stored for the transaction that must not be delivered, unless it already was.

        False, and nothing changed, when the transaction is ISSUED with this certificate (another handler
        delivered it); True when the certificate is revoked, now or before. A PENDING transaction holding
        it lets go of it, so that a reclaim issues afresh. ``CertificateNotFound`` if it is not stored.
        """
        changes = revocation(reason, revoked_at)
        with guard(), self._writer.begin() as conn:
            current = _lock_transaction(conn, profile, transaction_id)
            if current is not None and current.serial == serial:
                if current.state is TransactionState.ISSUED:
                    return False
                if current.state is TransactionState.PENDING:
                    _unlink(conn, current)
            key = certificate_key(serial, issuer)
            withdrawn = conn.execute(update(certificates).where(key & VALID_CERT).values(**changes)).rowcount
            if conn.execute(select(certificates.c.id).where(key)).first() is None:
                raise CertificateNotFound(serial, issuer)
            if withdrawn:
                entry = revocation_entry(SCEP, AuditAction.CERTIFICATE_WITHDRAW, serial, issuer, reason,
                                         profile=profile, transaction_id=transaction_id)
                append(conn, entry)
        return True

    def undelivered_before(self, *, before: datetime, limit: int = 100) -> list[TransactionRecord]:
        """PENDING transactions, not deferred, that hold a stored, undelivered certificate and were not
        touched since ``before``: their handler died and the device has not come back for it."""
        check_page(limit)
        c = transactions.c
        query = (
            select(transactions)
            .where(PENDING, ~c.deferred, c.serial_hex.is_not(None), c.updated_at < aware(before, "before"))
            .order_by(c.updated_at, c.id)
            .limit(limit)
        )
        with guard(), self._engine.connect() as conn:
            return [transaction_record(row) for row in conn.execute(query)]

    def abandon_transaction(
        self, *, profile: str, transaction_id: str, before: datetime, fail_info: int, reason: str,
        revoked_at: datetime,
    ) -> int | None:
        """Fail a transaction ``undelivered_before`` returned and revoke its certificate (cessationOfOperation),
        if it still is one; the serial revoked, or None when the transaction moved on meanwhile."""
        changes = revocation(UNDELIVERED_REASON, revoked_at)
        with guard(), self._writer.begin() as conn:
            current = _lock_transaction(conn, profile, transaction_id)
            if not _abandoned(current, aware(before, "before")):
                return None
            assert current is not None and current.serial is not None
            failed = {"state": TransactionState.FAILED.value, "fail_info": fail_info, "fail_reason": reason,
                      "csr_der": None, "updated_at": utcnow()}
            update_transaction(conn, PENDING, profile, transaction_id, failed)
            certificate = select(transactions.c.certificate_id).where(transaction_key(profile, transaction_id))
            linked = certificates.c.id == certificate.scalar_subquery()
            if conn.execute(update(certificates).where(linked, VALID_CERT).values(**changes)).rowcount:
                issuer = conn.execute(select(certificates.c.issuer).where(linked)).scalar_one()
                entry = revocation_entry(BACKGROUND, AuditAction.CERTIFICATE_WITHDRAW, current.serial, issuer,
                                         UNDELIVERED_REASON, profile=profile, transaction_id=transaction_id)
                append(conn, entry)
        return current.serial

    def _store(self, certificate: NewCertificate, values: Mapping[str, Any], link: Link) -> CertificateRecord:
        """Insert the certificate and ``link`` it in one database transaction; a taken serial is
        ``DuplicateCertificate``, any other constraint violation a ``StoreError``."""
        with guard():
            try:
                with self._writer.begin() as conn:
                    cert_id = required(conn.execute(insert(certificates).values(**values)).inserted_primary_key)[0]
                    link(conn, cert_id)
                    row = conn.execute(select(certificates).where(certificates.c.id == cert_id)).one()
                    append(conn, issue_entry(certificate))
            except IntegrityError as exc:
                with self._engine.connect() as conn:
                    taken = conn.execute(certificate_query(certificate.serial, certificate.issuer)).first()
                if taken is None:
                    raise StoreError(describe(exc)) from exc
                raise DuplicateCertificate(certificate.serial, certificate.issuer) from None
        return certificate_record(row)


def _lock_transaction(conn: Connection, profile: str, transaction_id: str) -> TransactionRecord | None:
    """The transaction row, locked to the end of the caller's transaction: PostgreSQL ``FOR UPDATE``
    (SQLite's write transactions hold the database lock already)."""
    query = select(transactions).where(transaction_key(profile, transaction_id)).with_for_update()
    row = conn.execute(query).one_or_none()
    return None if row is None else transaction_record(row)


def _complete(
    conn: Connection, profile: str, transaction_id: str, hex_serial: str, cert_id: int,
    condition: ColumnElement[bool] = PENDING,
) -> None:
    changes = {
        "state": TransactionState.ISSUED.value,
        "serial_hex": hex_serial,
        "certificate_id": cert_id,
        "fail_info": None,
        "fail_reason": None,
        "deferred": False,
        "csr_der": None,  # the request may carry a shared secret: keep only its hash once decided
        "updated_at": utcnow(),
    }
    update_transaction(conn, condition, profile, transaction_id, changes)


def _unlink(conn: Connection, current: TransactionRecord) -> None:
    """A PENDING transaction lets go of its undelivered certificate (it is being withdrawn)."""
    changes = {"serial_hex": None, "certificate_id": None, "updated_at": next_version(current, utcnow())}
    mine = transaction_key(current.profile, current.transaction_id)
    conn.execute(update(transactions).where(mine).values(**changes))


def _abandoned(current: TransactionRecord | None, before: datetime) -> bool:
    return (
        current is not None and current.state is TransactionState.PENDING and not current.deferred
        and current.serial is not None and current.updated_at < before
    )
