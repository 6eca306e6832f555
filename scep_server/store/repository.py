"""The certificate store: SCEP transactions, issued certificates, revocations, CRL numbers, audit log,
and the Intune outbox (its methods are in ``outbox.py``).

Works on SQLite (WAL, one writer at a time: write transactions start with ``BEGIN IMMEDIATE`` so they
queue on the busy timeout instead of failing on a lock upgrade; ``synchronous = FULL``, so a committed
issuance survives a power loss too; the database file and its -wal/-shm files are owner-only) and on
PostgreSQL (READ COMMITTED; races are settled by unique constraints, conditional updates and, where a
change spans a transaction and its certificate, a ``FOR UPDATE`` lock on the transaction row).
SQLAlchemy errors never leave the public methods: lost connections and lock timeouts become
``StoreUnavailable``, the rest ``StoreError``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Row, Select, create_engine, event, func, insert, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from scep_server.errors import StoreError, StoreUnavailable
from scep_server.store.base import (
    RACE_ATTEMPTS,
    WRITE_OPTION,
    aware,
    check_length,
    check_page,
    describe,
    guard,
    required,
    utcnow,
)
from scep_server.store.intune_revocations import IntuneRevocationRepository
from scep_server.store.outbox import OutboxRepository
from scep_server.store.records import (
    AlreadyRevoked,
    CertificateNotFound,
    CertificateRecord,
    CertStatus,
    DuplicateCertificate,
    NewCertificate,
    OperationRecord,
    TransactionNotPending,
    TransactionRecord,
    TransactionState,
)
from scep_server.store.tables import (
    DIGEST_LENGTH,
    IP_LENGTH,
    LABEL_LENGTH,
    PROFILE_LENGTH,
    TRANSACTION_ID_LENGTH,
    certificates,
    crl_state,
    scep_events,
    transactions,
)

log = logging.getLogger(__name__)

MAX_SERIAL_BITS = 160
MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
# CRLReason codes of RFC 5280 §5.3.1; 7 is unassigned.
REVOCATION_REASONS = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 10})

_SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout = 5000",
    "PRAGMA journal_mode = WAL",
    # NORMAL may lose the last commits on a power loss: an issued certificate must not be forgotten.
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",
)
_PG_MIGRATION_LOCK = 0x5CE95E4E  # pg_advisory_xact_lock key serialising concurrent migrate() calls
# A stored certificate that was never delivered, revoked when its transaction is reclaimed or abandoned.
UNDELIVERED_REASON = 5  # cessationOfOperation

_PENDING = transactions.c.state == TransactionState.PENDING.value
_VALID_CERT = certificates.c.status == CertStatus.VALID.value
_ISSUED = transactions.c.state == TransactionState.ISSUED.value
_DEFERRED = _PENDING & transactions.c.deferred


class Store(OutboxRepository, IntuneRevocationRepository):
    """Typed access to the database; one instance per process, safe to share between threads."""

    @classmethod
    def open(cls, url: str, *, pool_size: int = 5) -> Store:
        """Create the engine for ``url`` (no connection is made and nothing is migrated yet)."""
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError("the database URL cannot be parsed") from None
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = 10
        try:
            engine = create_engine(parsed, pool_size=pool_size, pool_pre_ping=True, connect_args=connect_args)
        except (ArgumentError, ImportError) as exc:
            raise StoreError(f"unsupported database URL: {exc}") from None
        if engine.dialect.name == "sqlite":
            _private_sqlite_file(parsed)
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
        # The query string may carry a password too (psycopg accepts ?password=).
        log.info("store: %s", parsed.set(query={}).render_as_string(hide_password=True))
        return cls(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ping(self) -> bool:
        """True when the database answers a trivial query (for health checks)."""
        try:
            with self._engine.connect() as conn:
                conn.execute(select(1)).scalar_one()
        except SQLAlchemyError as exc:
            log.warning("store ping failed: %s", describe(exc))
            return False
        return True

    # -- schema ---------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Upgrade the schema to the newest migration; a no-op when it is current.

        Runs in one transaction that first takes a database-wide lock (SQLite ``BEGIN IMMEDIATE``,
        PostgreSQL advisory lock), so concurrent callers run one after the other and the later ones
        find the schema current.
        """
        config = _alembic_config()
        with guard(), self._writer.connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def schema_is_current(self) -> bool:
        heads = set(ScriptDirectory.from_config(_alembic_config()).get_heads())
        with guard(), self._engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
        return current == heads

    # -- SCEP transactions ----------------------------------------------------------------------

    def claim_transaction(
        self,
        *,
        profile: str,
        transaction_id: str,
        message_type: int,
        csr_der: bytes,
        requester_ip: str | None,
        signer_key_sha256: str | None = None,
        subject_sha256: str | None = None,
        stale_after: timedelta = timedelta(minutes=5),
    ) -> tuple[TransactionRecord, bool]:
        """Start (or restart) the transaction; the flag is True for the one caller that should decide it.

        A new id is inserted PENDING. An existing row is returned unchanged with False, unless it FAILED
        or has been PENDING, not deferred, longer than ``stale_after`` (its handler presumably died): then
        it is reset to PENDING with this CSR and True. A deferred transaction is never stale, its retries
        belong to the background worker. Concurrent claims of one id: exactly one gets True.

        A stale transaction claimed again for the same CSR keeps the certificate stored for it and not
        delivered (``record.serial``, still valid): the claimer delivers that one, never a second. Every
        other valid certificate stored for this (profile, transaction_id) was never delivered and is
        revoked (cessationOfOperation) in the same database transaction. ``signer_key_sha256`` and
        ``subject_sha256`` say who may poll the transaction (see ``TransactionRecord``).
        """
        _check_key(profile, transaction_id)
        check_length(requester_ip, IP_LENGTH, "requester_ip")
        for digest in (signer_key_sha256, subject_sha256):
            check_length(digest, DIGEST_LENGTH, "digest")
        values = {
            "message_type": message_type,
            "state": TransactionState.PENDING.value,
            "csr_sha256": hashlib.sha256(csr_der).hexdigest(),
            "csr_der": csr_der,
            "serial_hex": None,
            "certificate_id": None,
            "fail_info": None,
            "fail_reason": None,
            "requester_ip": requester_ip,
            "deferred": False,
            "attempts": 0,
            "next_attempt_at": None,
            "last_error": None,
            "signer_key_sha256": signer_key_sha256,
            "subject_sha256": subject_sha256,
        }
        with guard():
            for _ in range(RACE_ATTEMPTS):
                outcome = self._try_claim(profile, transaction_id, values, stale_after)
                if outcome is not None:
                    return outcome
        raise StoreUnavailable(f"claims of transaction {transaction_id!r} kept colliding; retry later")

    def _try_claim(
        self, profile: str, transaction_id: str, values: Mapping[str, Any], stale_after: timedelta
    ) -> tuple[TransactionRecord, bool] | None:
        """One attempt of ``claim_transaction``; None when it lost a race and must look again."""
        try:
            with self._writer.begin() as conn:
                existing = _fetch_transaction(conn, profile, transaction_id)
                now = utcnow()
                if existing is None:
                    conn.execute(
                        insert(transactions).values(
                            profile=profile, transaction_id=transaction_id, created_at=now, updated_at=now, **values
                        )
                    )
                elif not _reclaimable(existing, now, stale_after):
                    return existing, False
                elif not _reclaim(conn, existing, values, now):
                    return None
                claimed = _fetch_transaction(conn, profile, transaction_id)
        except IntegrityError:
            return None
        if claimed is None:  # pragma: no cover - the row was written in this very transaction
            raise StoreError("claimed transaction vanished")
        return claimed, True

    def record_issued(
        self, *, profile: str, transaction_id: str | None, certificate: NewCertificate
    ) -> CertificateRecord:
        """Store the certificate and mark its transaction ISSUED, both or neither.

        Raises ``DuplicateCertificate`` if the serial is taken and ``TransactionNotPending`` if the
        transaction is missing or no longer PENDING (another handler finished it first).
        """
        values = _certificate_values(certificate)
        with guard():
            try:
                with self._writer.begin() as conn:
                    inserted = conn.execute(insert(certificates).values(**values)).inserted_primary_key
                    cert_id = required(inserted)[0]
                    if transaction_id is not None:
                        _complete_transaction(conn, profile, transaction_id, values["serial_hex"], cert_id)
                    row = conn.execute(select(certificates).where(certificates.c.id == cert_id)).one()
            except IntegrityError as exc:
                if self.get_certificate(certificate.serial, certificate.issuer) is None:
                    raise StoreError(describe(exc)) from exc
                raise DuplicateCertificate(certificate.serial, certificate.issuer) from None
        return _certificate_record(row)

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
        values = _certificate_values(certificate)
        free = _PENDING & (transactions.c.csr_sha256 == csr_sha256) & transactions.c.serial_hex.is_(None)
        with guard():
            try:
                with self._writer.begin() as conn:
                    cert_id = required(conn.execute(insert(certificates).values(**values)).inserted_primary_key)[0]
                    link = {"serial_hex": values["serial_hex"], "certificate_id": cert_id, "updated_at": utcnow()}
                    _update_transaction(conn, free, profile, transaction_id, link)
                    row = conn.execute(select(certificates).where(certificates.c.id == cert_id)).one()
            except IntegrityError as exc:
                if self.get_certificate(certificate.serial, certificate.issuer) is None:
                    raise StoreError(describe(exc)) from exc
                raise DuplicateCertificate(certificate.serial, certificate.issuer) from None
        return _certificate_record(row)

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
            row = conn.execute(select(certificates).where(_certificate_key(serial, issuer))).one_or_none()
            if row is None:
                raise CertificateNotFound(serial, issuer)
            if current is not None and current.state is TransactionState.ISSUED and current.serial == serial:
                return
            if row.status != CertStatus.VALID.value:
                raise AlreadyRevoked(_certificate_record(row))
            condition = _PENDING if csr_sha256 is None else _PENDING & (transactions.c.csr_sha256 == csr_sha256)
            _complete_transaction(conn, profile, transaction_id, serial_hex(serial), int(row.id), condition)

    def withdraw_undelivered(
        self, *, profile: str, transaction_id: str, serial: int, issuer: str, reason: int, revoked_at: datetime
    ) -> bool:
        """Revoke a certificate stored for the transaction that must not be delivered, unless it already was.

        False, and nothing changed, when the transaction is ISSUED with this certificate (another handler
        delivered it); True when the certificate is revoked, now or before. A PENDING transaction holding
        it lets go of it, so that a reclaim issues afresh. ``CertificateNotFound`` if it is not stored.
        """
        changes = _revocation(reason, revoked_at)
        with guard(), self._writer.begin() as conn:
            current = _lock_transaction(conn, profile, transaction_id)
            if current is not None and current.serial == serial:
                if current.state is TransactionState.ISSUED:
                    return False
                if current.state is TransactionState.PENDING:
                    _unlink(conn, current)
            conn.execute(update(certificates).where(_certificate_key(serial, issuer) & _VALID_CERT).values(**changes))
            if conn.execute(select(certificates.c.id).where(_certificate_key(serial, issuer))).first() is None:
                raise CertificateNotFound(serial, issuer)
        return True

    def undelivered_before(self, *, before: datetime, limit: int = 100) -> list[TransactionRecord]:
        """PENDING transactions, not deferred, that hold a stored, undelivered certificate and were not
        touched since ``before``: their handler died and the device has not come back for it."""
        check_page(limit)
        c = transactions.c
        query = (
            select(transactions)
            .where(_PENDING, ~c.deferred, c.serial_hex.is_not(None), c.updated_at < aware(before, "before"))
            .order_by(c.updated_at, c.id)
            .limit(limit)
        )
        with guard(), self._engine.connect() as conn:
            return [_transaction_record(row) for row in conn.execute(query)]

    def abandon_transaction(
        self, *, profile: str, transaction_id: str, before: datetime, fail_info: int, reason: str,
        revoked_at: datetime,
    ) -> int | None:
        """Fail a transaction ``undelivered_before`` returned and revoke its certificate (cessationOfOperation),
        if it still is one; the serial revoked, or None when the transaction moved on meanwhile."""
        changes = _revocation(UNDELIVERED_REASON, revoked_at)
        with guard(), self._writer.begin() as conn:
            current = _lock_transaction(conn, profile, transaction_id)
            if not _abandoned(current, aware(before, "before")):
                return None
            assert current is not None and current.serial is not None
            failed = {"state": TransactionState.FAILED.value, "fail_info": fail_info, "fail_reason": reason,
                      "csr_der": None, "updated_at": utcnow()}
            _update_transaction(conn, _PENDING, profile, transaction_id, failed)
            certificate = select(transactions.c.certificate_id).where(_transaction_key(profile, transaction_id))
            conn.execute(
                update(certificates)
                .where(certificates.c.id == certificate.scalar_subquery(), _VALID_CERT)
                .values(**changes)
            )
        return current.serial

    def record_failure(self, *, profile: str, transaction_id: str, fail_info: int, reason: str) -> None:
        """Mark a PENDING transaction FAILED (failInfo: RFC 8894 §3.2.1.4.5); a later claim may retry it."""
        changes = {
            "state": TransactionState.FAILED.value,
            "fail_info": fail_info,
            "fail_reason": reason,
            "deferred": False,
            "csr_der": None,
            "updated_at": utcnow(),
        }
        with guard(), self._writer.begin() as conn:
            _update_transaction(conn, _PENDING, profile, transaction_id, changes)

    def fail_issued_transaction(self, *, profile: str, transaction_id: str, fail_info: int, reason: str) -> None:
        """Turn an ISSUED transaction FAILED, keeping its serial: the certificate was withdrawn after issuance.

        That happens when Intune could not be told of the issuance; the client's next poll then gets
        FAILURE instead of a certificate Intune does not know about. ``TransactionNotPending`` carries the
        state found if the transaction is not ISSUED.
        """
        changes = {
            "state": TransactionState.FAILED.value,
            "fail_info": fail_info,
            "fail_reason": reason,
            "deferred": False,
            "updated_at": utcnow(),
        }
        with guard(), self._writer.begin() as conn:
            _update_transaction(conn, _ISSUED, profile, transaction_id, changes)

    # -- deferred transactions ------------------------------------------------------------------

    def defer_transaction(self, *, profile: str, transaction_id: str, next_attempt_at: datetime, error: str) -> None:
        """Leave a PENDING transaction to a background retry at ``next_attempt_at``.

        For a challenge that cannot be decided now (its validator is unreachable): the client is told
        PENDING and keeps polling while the worker retries. Counts the failed attempt and keeps ``error``.
        """
        changes = {**_retry_changes(next_attempt_at, error), "deferred": True}
        with guard(), self._writer.begin() as conn:
            _update_transaction(conn, _PENDING, profile, transaction_id, changes)

    def due_deferred(self, *, now: datetime, limit: int = 20) -> list[TransactionRecord]:
        """Deferred transactions whose retry is due at ``now``, the longest-waiting first."""
        check_page(limit)
        c = transactions.c
        query = (
            select(transactions)
            .where(_DEFERRED, c.next_attempt_at <= aware(now, "now"))
            .order_by(c.next_attempt_at, c.id)
            .limit(limit)
        )
        with guard(), self._engine.connect() as conn:
            return [_transaction_record(row) for row in conn.execute(query)]

    def lease_deferred(
        self, *, profile: str, transaction_id: str, expected_next_attempt_at: datetime, lease_until: datetime
    ) -> bool:
        """Take the due retry of a deferred transaction; True for the one caller that got it.

        Moves the next attempt to ``lease_until`` only if it is still at ``expected_next_attempt_at`` (as
        ``due_deferred`` read it): of several workers that saw it due, exactly one wins, and if that one
        dies the transaction is due again when the lease runs out.
        """
        unchanged = (
            _transaction_key(profile, transaction_id)
            & _DEFERRED
            & (transactions.c.next_attempt_at == aware(expected_next_attempt_at, "expected_next_attempt_at"))
        )
        lease = aware(lease_until, "lease_until")
        with guard(), self._writer.begin() as conn:
            return conn.execute(update(transactions).where(unchanged).values(next_attempt_at=lease)).rowcount == 1

    def reschedule_deferred(self, *, profile: str, transaction_id: str, next_attempt_at: datetime, error: str) -> None:
        """Count another failed retry of a deferred transaction and try again at ``next_attempt_at``."""
        with guard(), self._writer.begin() as conn:
            _update_transaction(conn, _DEFERRED, profile, transaction_id, _retry_changes(next_attempt_at, error))

    def get_transaction(self, profile: str, transaction_id: str) -> TransactionRecord | None:
        with guard(), self._engine.connect() as conn:
            return _fetch_transaction(conn, profile, transaction_id)

    # -- certificates ---------------------------------------------------------------------------

    def get_certificate(self, serial: int, issuer: str | None = None) -> CertificateRecord | None:
        """The certificate with this serial; without ``issuer``, the newest one of any issuer."""
        query = select(certificates).where(certificates.c.serial_hex == serial_hex(serial))
        if issuer is not None:
            query = query.where(certificates.c.issuer == issuer)
        query = query.order_by(certificates.c.id.desc()).limit(1)
        with guard(), self._engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _certificate_record(row)

    def find_certificates_by_subject(self, issuer: str, subject: str) -> list[CertificateRecord]:
        """Certificates of this issuer and subject, newest first (RFC 8894 §3.3.3 CertPoll)."""
        query = (
            select(certificates)
            .where(certificates.c.issuer == issuer, certificates.c.subject == subject)
            .order_by(certificates.c.issued_at.desc(), certificates.c.id.desc())
        )
        return self._certificate_list(query)

    def list_certificates(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        status: CertStatus | None = None,
        profile: str | None = None,
    ) -> list[CertificateRecord]:
        """A page of certificates, newest first."""
        check_page(limit, offset)
        query = select(certificates).order_by(certificates.c.issued_at.desc(), certificates.c.id.desc())
        if status is not None:
            query = query.where(certificates.c.status == CertStatus(status).value)
        if profile is not None:
            query = query.where(certificates.c.profile == profile)
        return self._certificate_list(query.limit(limit).offset(offset))

    def count_certificates(self, *, status: CertStatus | None = None) -> int:
        query = select(func.count()).select_from(certificates)
        if status is not None:
            query = query.where(certificates.c.status == CertStatus(status).value)
        with guard(), self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def _certificate_list(self, query: Select[Any]) -> list[CertificateRecord]:
        with guard(), self._engine.connect() as conn:
            return [_certificate_record(row) for row in conn.execute(query)]

    # -- revocation and CRLs --------------------------------------------------------------------

    def revoke(self, serial: int, issuer: str, *, reason: int, revoked_at: datetime) -> CertificateRecord:
        """Revoke a VALID certificate (``reason`` is an RFC 5280 §5.3.1 CRLReason code)."""
        changes = _revocation(reason, revoked_at)
        key = _certificate_key(serial, issuer)
        with guard(), self._writer.begin() as conn:
            revoked = conn.execute(update(certificates).where(key & _VALID_CERT).values(**changes)).rowcount
            row = conn.execute(select(certificates).where(key)).one_or_none()
        if row is None:
            raise CertificateNotFound(serial, issuer)
        record = _certificate_record(row)
        if not revoked:
            raise AlreadyRevoked(record)
        return record

    def iter_revoked(self, issuer: str, *, batch_size: int = 1000) -> Iterator[tuple[int, datetime, int | None]]:
        """(serial, revoked_at, reason) of every revoked certificate of ``issuer``, read in batches."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        return self._iter_revoked(issuer, batch_size)

    def _iter_revoked(self, issuer: str, batch_size: int) -> Iterator[tuple[int, datetime, int | None]]:
        after = ""
        while True:
            batch = self._revoked_batch(issuer, after, batch_size)
            for hex_serial, revoked_at, reason in batch:
                yield int(hex_serial, 16), revoked_at, reason
            if len(batch) < batch_size:
                return
            after = batch[-1][0]

    def _revoked_batch(self, issuer: str, after: str, size: int) -> list[tuple[str, datetime, int | None]]:
        """Keyset page on the (issuer, serial_hex) unique index: rows with serial_hex > ``after``."""
        c = certificates.c
        query = (
            select(c.serial_hex, c.revoked_at, c.revocation_reason)
            .where(c.issuer == issuer, c.status == CertStatus.REVOKED.value, c.serial_hex > after)
            .order_by(c.serial_hex)
            .limit(size)
        )
        with guard(), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(row.serial_hex, required(row.revoked_at), row.revocation_reason) for row in rows]

    def next_crl_number(self, issuer: str) -> int:
        """Allocate the next CRLNumber (RFC 5280 §5.2.3) of ``issuer``: 1, 2, 3, ..."""
        with guard():
            for _ in range(RACE_ATTEMPTS):
                try:
                    with self._writer.begin() as conn:
                        return _bump_crl_number(conn, issuer)
                except IntegrityError:
                    continue  # another caller created the counter row first; bump it instead
        raise StoreUnavailable(f"CRL number allocation for {issuer} kept colliding; retry later")

    # -- audit log ------------------------------------------------------------------------------

    def record_operation(
        self,
        *,
        profile: str,
        operation: str,
        message_type: int | None,
        transaction_id: str | None,
        outcome: str,
        detail: str | None,
        requester_ip: str | None,
    ) -> None:
        """Append one SCEP PKIOperation to the audit log. Never pass secrets (challenges) in ``detail``.

        The transactionID may come from a malformed request, so an over-long one is truncated rather
        than refused: the log must record the failure.
        """
        check_length(profile, PROFILE_LENGTH, "profile")
        check_length(operation, LABEL_LENGTH, "operation")
        check_length(outcome, LABEL_LENGTH, "outcome")
        check_length(requester_ip, IP_LENGTH, "requester_ip")
        row = {
            "occurred_at": utcnow(),
            "profile": profile,
            "operation": operation,
            "message_type": message_type,
            "transaction_id": None if transaction_id is None else transaction_id[:TRANSACTION_ID_LENGTH],
            "outcome": outcome,
            "detail": detail,
            "requester_ip": requester_ip,
        }
        with guard(), self._writer.begin() as conn:
            conn.execute(insert(scep_events).values(**row))

    def list_operations(
        self, *, limit: int = 100, offset: int = 0, profile: str | None = None, transaction_id: str | None = None
    ) -> list[OperationRecord]:
        """A page of the audit log, newest first."""
        check_page(limit, offset)
        c = scep_events.c
        query = select(scep_events).order_by(c.occurred_at.desc(), c.id.desc()).limit(limit).offset(offset)
        if profile is not None:
            query = query.where(c.profile == profile)
        if transaction_id is not None:
            query = query.where(c.transaction_id == transaction_id)
        with guard(), self._engine.connect() as conn:
            return [_operation_record(row) for row in conn.execute(query)]


# -- engine setup and error mapping ----------------------------------------------------------------


def _private_sqlite_file(url: URL) -> None:
    """Create the database file owner-only (0600) before SQLite does, and take group and other access
    from an existing one and its -wal/-shm files (SQLite creates those with the database file's mode)."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("uri"):
        return
    path = Path(database)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        for each in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
            _owner_only(each)
    except OSError as exc:  # e.g. a missing directory: connecting reports it as the store being unavailable
        log.debug("store: cannot prepare %s: %s", path, exc.strerror)


def _owner_only(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        path.chmod(mode & 0o700)
        log.warning("store: %s was readable by others (mode %o); it is now owner-only", path, mode)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the sqlite3 module (it skips it for SELECT); _sqlite_on_begin emits it.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            if "journal_mode" in pragma:
                _switch_to_wal(cursor, pragma)
            else:
                cursor.execute(pragma)
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any, pragma: str) -> None:
    # WAL is persistent: once set, this is a read. Switching a new database needs an exclusive lock
    # and SQLite answers SQLITE_BUSY at once, without the busy handler, when another connection is
    # opening it at the same moment, so retry for up to the busy timeout.
    deadline = time.monotonic() + 5
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute(pragma)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_on_begin(conn: Connection) -> None:
    # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when another
    # writer got in between; IMMEDIATE takes the write lock up front and waits on busy_timeout.
    immediate = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


# -- values ----------------------------------------------------------------------------------------


def parse_serial_hex(text: str) -> int:
    """A serial number as people and Intune write it (hex, optional ``0x``, ``:`` or spaces, any case);
    ``ValueError`` unless it is hex and a serial number this store can hold."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "").replace(" ", "")
    serial = int(cleaned, 16)
    serial_hex(serial)  # the same bounds as storing it
    return serial


def serial_storable(serial: int) -> bool:
    """Whether ``serial`` is a serial number this store can hold (positive, at most 160 bits): anything
    else, such as a serial a client sent, names no stored certificate."""
    return isinstance(serial, int) and not isinstance(serial, bool) and 0 < serial < 1 << MAX_SERIAL_BITS


def serial_hex(serial: int) -> str:
    """The stored form of a certificate serial number: lowercase hex without leading zeros."""
    if isinstance(serial, bool) or not isinstance(serial, int):
        raise ValueError("serial must be an int")
    if not 0 < serial < 1 << MAX_SERIAL_BITS:
        raise ValueError(f"serial must be positive and at most {MAX_SERIAL_BITS} bits")
    return format(serial, "x")


def _check_key(profile: str, transaction_id: str) -> None:
    if not profile or not transaction_id:
        raise ValueError("profile and transaction_id must not be empty")
    check_length(profile, PROFILE_LENGTH, "profile")
    check_length(transaction_id, TRANSACTION_ID_LENGTH, "transaction_id")


def _certificate_values(certificate: NewCertificate) -> dict[str, Any]:
    check_length(certificate.profile, PROFILE_LENGTH, "profile")
    check_length(certificate.transaction_id, TRANSACTION_ID_LENGTH, "transaction_id")
    check_length(certificate.requester_ip, IP_LENGTH, "requester_ip")
    return {
        "serial_hex": serial_hex(certificate.serial),
        "issuer": certificate.issuer,
        "subject": certificate.subject,
        "sans": json.dumps(list(certificate.sans), separators=(",", ":")),
        "not_before": aware(certificate.not_before, "not_before"),
        "not_after": aware(certificate.not_after, "not_after"),
        "profile": certificate.profile,
        "transaction_id": certificate.transaction_id,
        "requester_ip": certificate.requester_ip,
        "der": certificate.der,
        "sha1_thumbprint": certificate.sha1_thumbprint,
        "sha256_thumbprint": certificate.sha256_thumbprint,
        "status": CertStatus.VALID.value,
        "issued_at": utcnow(),
        "revoked_at": None,
        "revocation_reason": None,
    }


def _certificate_record(row: Row[Any]) -> CertificateRecord:
    m = row._mapping
    return CertificateRecord(
        serial=int(m["serial_hex"], 16),
        issuer=m["issuer"],
        subject=m["subject"],
        sans=tuple(json.loads(m["sans"])),
        not_before=m["not_before"],
        not_after=m["not_after"],
        profile=m["profile"],
        transaction_id=m["transaction_id"],
        requester_ip=m["requester_ip"],
        der=bytes(m["der"]),
        sha1_thumbprint=m["sha1_thumbprint"],
        sha256_thumbprint=m["sha256_thumbprint"],
        status=CertStatus(m["status"]),
        issued_at=m["issued_at"],
        revoked_at=m["revoked_at"],
        revocation_reason=m["revocation_reason"],
    )


def _transaction_record(row: Row[Any]) -> TransactionRecord:
    m = row._mapping
    return TransactionRecord(
        profile=m["profile"],
        transaction_id=m["transaction_id"],
        message_type=m["message_type"],
        state=TransactionState(m["state"]),
        csr_sha256=m["csr_sha256"],
        csr_der=None if m["csr_der"] is None else bytes(m["csr_der"]),
        serial=None if m["serial_hex"] is None else int(m["serial_hex"], 16),
        fail_info=m["fail_info"],
        fail_reason=m["fail_reason"],
        requester_ip=m["requester_ip"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        deferred=bool(m["deferred"]),
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        last_error=m["last_error"],
        signer_key_sha256=m["signer_key_sha256"],
        subject_sha256=m["subject_sha256"],
    )


def _operation_record(row: Row[Any]) -> OperationRecord:
    m = row._mapping
    return OperationRecord(
        occurred_at=m["occurred_at"],
        profile=m["profile"],
        operation=m["operation"],
        message_type=m["message_type"],
        transaction_id=m["transaction_id"],
        outcome=m["outcome"],
        detail=m["detail"],
        requester_ip=m["requester_ip"],
    )


# -- statements run inside a caller's transaction --------------------------------------------------


def _retry_changes(next_attempt_at: datetime, error: str) -> dict[str, Any]:
    return {
        "attempts": transactions.c.attempts + 1,
        "next_attempt_at": aware(next_attempt_at, "next_attempt_at"),
        "last_error": error,
        "updated_at": utcnow(),
    }


def _transaction_key(profile: str, transaction_id: str) -> ColumnElement[bool]:
    return (transactions.c.profile == profile) & (transactions.c.transaction_id == transaction_id)


def _fetch_transaction(conn: Connection, profile: str, transaction_id: str) -> TransactionRecord | None:
    row = conn.execute(select(transactions).where(_transaction_key(profile, transaction_id))).one_or_none()
    return None if row is None else _transaction_record(row)


def _reclaimable(existing: TransactionRecord, now: datetime, stale_after: timedelta) -> bool:
    if existing.state is TransactionState.FAILED:
        return True
    if existing.state is not TransactionState.PENDING or existing.deferred:
        return False
    return existing.updated_at < now - stale_after


def _certificate_key(serial: int, issuer: str) -> ColumnElement[bool]:
    return (certificates.c.issuer == issuer) & (certificates.c.serial_hex == serial_hex(serial))


def _revocation(reason: int, revoked_at: datetime) -> dict[str, Any]:
    if reason not in REVOCATION_REASONS:
        raise ValueError(f"{reason} is not an RFC 5280 CRLReason code")
    return {"status": CertStatus.REVOKED.value, "revoked_at": aware(revoked_at, "revoked_at"),
            "revocation_reason": reason}


def _lock_transaction(conn: Connection, profile: str, transaction_id: str) -> TransactionRecord | None:
    """The transaction row, locked to the end of the caller's transaction: PostgreSQL ``FOR UPDATE``
    (SQLite's write transactions hold the database lock already). Changes that read a transaction and
    write its certificate take it first, so they cannot interleave with one another."""
    query = select(transactions).where(_transaction_key(profile, transaction_id)).with_for_update()
    row = conn.execute(query).one_or_none()
    return None if row is None else _transaction_record(row)


def _next_version(existing: TransactionRecord, now: datetime) -> datetime:
    # updated_at is the row's version: never reuse the old value, even within one clock tick.
    return max(now, existing.updated_at + timedelta(microseconds=1))


def _unlink(conn: Connection, current: TransactionRecord) -> None:
    """A PENDING transaction lets go of its undelivered certificate (it is being withdrawn)."""
    changes = {"serial_hex": None, "certificate_id": None, "updated_at": _next_version(current, utcnow())}
    mine = _transaction_key(current.profile, current.transaction_id)
    conn.execute(update(transactions).where(mine).values(**changes))


def _abandoned(current: TransactionRecord | None, before: datetime) -> bool:
    return (
        current is not None and current.state is TransactionState.PENDING and not current.deferred
        and current.serial is not None and current.updated_at < before
    )


def _reclaim(conn: Connection, existing: TransactionRecord, values: Mapping[str, Any], now: datetime) -> bool:
    """Reset ``existing`` for a new claim (see ``claim_transaction``); False if someone changed it first."""
    kept = _undelivered_to_keep(conn, existing, values["csr_sha256"])
    if not _reset_transaction(conn, existing, {**values, **kept}, now):
        return False
    _revoke_orphans(conn, existing.profile, existing.transaction_id, kept.get("certificate_id"))
    return True


def _undelivered_to_keep(conn: Connection, existing: TransactionRecord, csr_sha256: str) -> dict[str, Any]:
    """The link a reclaim keeps: the certificate of a PENDING transaction asked again for the same CSR,
    while that certificate is valid. Anything else starts afresh."""
    if existing.state is not TransactionState.PENDING or existing.serial is None or existing.csr_sha256 != csr_sha256:
        return {}
    query = (
        select(certificates.c.id)
        .join(transactions, transactions.c.certificate_id == certificates.c.id)
        .where(_transaction_key(existing.profile, existing.transaction_id), _VALID_CERT)
    )
    cert_id = conn.execute(query).scalar_one_or_none()
    return {} if cert_id is None else {"serial_hex": serial_hex(existing.serial), "certificate_id": cert_id}


def _revoke_orphans(conn: Connection, profile: str, transaction_id: str, keep: int | None) -> None:
    """Revoke the valid certificates stored for this transaction but ``keep``: none of them was delivered."""
    c = certificates.c
    orphan = (c.profile == profile) & (c.transaction_id == transaction_id) & _VALID_CERT
    if keep is not None:
        orphan &= c.id != keep
    serials = list(conn.execute(select(c.serial_hex).where(orphan)).scalars())
    if not serials:
        return
    conn.execute(update(certificates).where(orphan).values(**_revocation(UNDELIVERED_REASON, utcnow())))
    log.warning("transaction %r of profile %r reclaimed: revoked its undelivered certificate(s) %s",
                transaction_id, profile, ", ".join(serials))


def _reset_transaction(conn: Connection, existing: TransactionRecord, values: Mapping[str, Any], now: datetime) -> bool:
    """Reset ``existing`` unless someone changed it since it was read; True if this call won."""
    new_version = _next_version(existing, now)
    unchanged = (
        _transaction_key(existing.profile, existing.transaction_id)
        & (transactions.c.state == existing.state.value)
        & (transactions.c.deferred == existing.deferred)
        & (transactions.c.updated_at == existing.updated_at)
    )
    statement = update(transactions).where(unchanged).values(updated_at=new_version, **values)
    return conn.execute(statement).rowcount == 1


def _update_transaction(
    conn: Connection, condition: ColumnElement[bool], profile: str, transaction_id: str, changes: Mapping[str, Any]
) -> None:
    """Apply ``changes`` if the transaction meets ``condition``, else raise ``TransactionNotPending``."""
    mine = _transaction_key(profile, transaction_id) & condition
    if conn.execute(update(transactions).where(mine).values(**changes)).rowcount == 1:
        return
    current = _fetch_transaction(conn, profile, transaction_id)
    raise TransactionNotPending(profile, transaction_id, None if current is None else current.state)


def _complete_transaction(
    conn: Connection, profile: str, transaction_id: str, hex_serial: str, cert_id: int,
    condition: ColumnElement[bool] = _PENDING,
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
    _update_transaction(conn, condition, profile, transaction_id, changes)


def _bump_crl_number(conn: Connection, issuer: str) -> int:
    now = utcnow()
    mine = crl_state.c.issuer == issuer
    bumped = conn.execute(
        update(crl_state).where(mine).values(crl_number=crl_state.c.crl_number + 1, updated_at=now)
    ).rowcount
    if not bumped:
        conn.execute(insert(crl_state).values(issuer=issuer, crl_number=1, updated_at=now))
        return 1
    return int(conn.execute(select(crl_state.c.crl_number).where(mine)).scalar_one())
