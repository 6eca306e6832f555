"""The certificate store: one object composed of a typed repository per concern, over one engine.

``Store`` offers every repository's methods itself, so callers hold only the store; each method hands the
call to its piece, where it is documented. The pieces share the engine's connection pool and settle
their races in the database (see ``engine.py`` for SQLite and PostgreSQL). SQLAlchemy errors never
leave the public methods: lost connections and lock timeouts become ``StoreUnavailable``, the rest
``StoreError``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import Engine

from scep_server.store import writer
from scep_server.store.audit import AuditRepository
from scep_server.store.audit_chain import (
    SERVICE,
    Actor,
    AuditChain,
    AuditEntry,
    AuditFilter,
    AuditRecord,
    VerifyReport,
)
from scep_server.store.certificates import CertificateRepository
from scep_server.store.crls import CrlRepository, PublishedCrlRecord
from scep_server.store.deferred import DeferredRepository
from scep_server.store.deliveries import DeliveryRepository
from scep_server.store.devices import DeviceRepository
from scep_server.store.engine import SchemaRepository, open_engine
from scep_server.store.enrollments import EnrollmentRepository
from scep_server.store.intune_revocations import (
    IntuneRevocationRecord,
    IntuneRevocationRepository,
    RevocationSyncSummary,
)
from scep_server.store.outbox import OutboxRepository
from scep_server.store.records import (
    AuditEvent,
    CertificateRecord,
    CertStatus,
    NewCertificate,
    NewTransaction,
    OperationRecord,
    OutboxRecord,
    TransactionRecord,
)
from scep_server.store.reports import CertificateFilter, EventFilter, KeyedCertificate, ReportRepository
from scep_server.store.revocations import RevocationRepository, RevokedEntry
from scep_server.store.steps import StepRecord, StepRepository, TransactionSearch, TransactionSummary
from scep_server.store.tokens import TokenRecord, TokenRepository
from scep_server.store.transactions import TransactionRepository


class Store:
    """Typed access to the database; one instance per process, safe to share between threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.schema = SchemaRepository(engine)
        self.transactions = TransactionRepository(engine)
        self.deferred = DeferredRepository(engine)
        self.deliveries = DeliveryRepository(engine)
        self.enrollments = EnrollmentRepository(engine)
        self.certificates = CertificateRepository(engine)
        self.revocations = RevocationRepository(engine)
        self.audit = AuditRepository(engine)
        self.outbox = OutboxRepository(engine)
        self.intune_revocations = IntuneRevocationRepository(engine)
        self.crls = CrlRepository(engine)
        self.reports = ReportRepository(engine)
        self.audit_chain = AuditChain(engine)
        self.tokens = TokenRepository(engine)
        self.steps = StepRepository(engine)

    @classmethod
    def open(cls, url: str, *, pool_size: int = 5) -> Store:
        """Create the engine for ``url`` (no connection is made and nothing is migrated yet)."""
        return cls(open_engine(url, pool_size=pool_size))

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        writer.close_turn(self._engine)
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- schema (engine.py) ---------------------------------------------------------------------

    def ping(self) -> bool:
        return self.schema.ping()

    def migrate(self) -> None:
        self.schema.migrate()

    def schema_is_current(self) -> bool:
        return self.schema.schema_is_current()

    # -- SCEP transactions (transactions.py) ----------------------------------------------------

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
        return self.transactions.claim_transaction(
            profile=profile, transaction_id=transaction_id, message_type=message_type, csr_der=csr_der,
            requester_ip=requester_ip, signer_key_sha256=signer_key_sha256, subject_sha256=subject_sha256,
            stale_after=stale_after,
        )

    def record_failure(self, *, profile: str, transaction_id: str, fail_info: int, reason: str) -> None:
        self.transactions.record_failure(
            profile=profile, transaction_id=transaction_id, fail_info=fail_info, reason=reason
        )

    def fail_issued_transaction(self, *, profile: str, transaction_id: str, fail_info: int, reason: str) -> None:
        self.transactions.fail_issued_transaction(
            profile=profile, transaction_id=transaction_id, fail_info=fail_info, reason=reason
        )

    def transaction_exists(self, profile: str, transaction_id: str) -> bool:
        return self.transactions.transaction_exists(profile, transaction_id)

    def get_transaction(self, profile: str, transaction_id: str) -> TransactionRecord | None:
        return self.transactions.get_transaction(profile, transaction_id)

    # -- the steps and the story of an enrollment (steps.py) ------------------------------------

    def record_step(
        self,
        *,
        profile: str,
        transaction_id: str,
        step: str,
        outcome: str,
        intune_code: str | None = None,
        activity_id: str | None = None,
        detail: str | None = None,
        at: datetime | None = None,
    ) -> None:
        self.steps.record_step(
            profile=profile, transaction_id=transaction_id, step=step, outcome=outcome, intune_code=intune_code,
            activity_id=activity_id, detail=detail, at=at,
        )

    def steps_of(self, transaction_id: str, profile: str | None = None) -> list[StepRecord]:
        return self.steps.steps_of(transaction_id, profile)

    def search_transactions(self, wanted: TransactionSearch) -> list[TransactionSummary]:
        return self.steps.search_transactions(wanted)

    def certificate_of_transaction(
        self, profile: str, transaction_id: str, serial: int | None = None
    ) -> CertificateRecord | None:
        return self.steps.certificate_of_transaction(profile, transaction_id, serial)

    def outbox_of(self, transaction_id: str) -> list[OutboxRecord]:
        return self.steps.outbox_of(transaction_id)

    # -- deferred transactions (deferred.py) ----------------------------------------------------

    def defer_transaction(self, *, profile: str, transaction_id: str, next_attempt_at: datetime, error: str) -> None:
        self.deferred.defer_transaction(
            profile=profile, transaction_id=transaction_id, next_attempt_at=next_attempt_at, error=error
        )

    def count_deferred(self) -> int:
        return self.deferred.count_deferred()

    def list_deferred(self, *, limit: int = 50) -> list[TransactionRecord]:
        return self.deferred.list_deferred(limit=limit)

    def due_deferred(self, *, now: datetime, limit: int = 20) -> list[TransactionRecord]:
        return self.deferred.due_deferred(now=now, limit=limit)

    def lease_deferred(
        self, *, profile: str, transaction_id: str, expected_next_attempt_at: datetime, lease_until: datetime
    ) -> bool:
        return self.deferred.lease_deferred(
            profile=profile, transaction_id=transaction_id, expected_next_attempt_at=expected_next_attempt_at,
            lease_until=lease_until,
        )

    def reschedule_deferred(self, *, profile: str, transaction_id: str, next_attempt_at: datetime, error: str) -> None:
        self.deferred.reschedule_deferred(
            profile=profile, transaction_id=transaction_id, next_attempt_at=next_attempt_at, error=error
        )

    # -- issued certificates and their delivery (deliveries.py) ---------------------------------

    def record_issued(
        self, *, profile: str, transaction_id: str | None, certificate: NewCertificate
    ) -> CertificateRecord:
        return self.deliveries.record_issued(profile=profile, transaction_id=transaction_id, certificate=certificate)

    def record_enrollment(self, transaction: NewTransaction, certificate: NewCertificate, event: AuditEvent) -> None:
        self.enrollments.record_enrollment(transaction, certificate, event)

    def record_withdrawn(self, certificate: NewCertificate, *, reason: int, revoked_at: datetime) -> None:
        self.enrollments.record_withdrawn(certificate, reason=reason, revoked_at=revoked_at)

    def record_undelivered(
        self, *, profile: str, transaction_id: str, csr_sha256: str, certificate: NewCertificate
    ) -> CertificateRecord:
        return self.deliveries.record_undelivered(
            profile=profile, transaction_id=transaction_id, csr_sha256=csr_sha256, certificate=certificate
        )

    def complete_transaction(
        self, *, profile: str, transaction_id: str, serial: int, issuer: str, csr_sha256: str | None = None
    ) -> None:
        self.deliveries.complete_transaction(
            profile=profile, transaction_id=transaction_id, serial=serial, issuer=issuer, csr_sha256=csr_sha256
        )

    def withdraw_undelivered(
        self, *, profile: str, transaction_id: str, serial: int, issuer: str, reason: int, revoked_at: datetime
    ) -> bool:
        return self.deliveries.withdraw_undelivered(
            profile=profile, transaction_id=transaction_id, serial=serial, issuer=issuer, reason=reason,
            revoked_at=revoked_at,
        )

    def undelivered_before(self, *, before: datetime, limit: int = 100) -> list[TransactionRecord]:
        return self.deliveries.undelivered_before(before=before, limit=limit)

    def abandon_transaction(
        self, *, profile: str, transaction_id: str, before: datetime, fail_info: int, reason: str,
        revoked_at: datetime,
    ) -> int | None:
        return self.deliveries.abandon_transaction(
            profile=profile, transaction_id=transaction_id, before=before, fail_info=fail_info, reason=reason,
            revoked_at=revoked_at,
        )

    # -- certificates (certificates.py) ---------------------------------------------------------

    def get_certificate(self, serial: int, issuer: str | None = None) -> CertificateRecord | None:
        return self.certificates.get_certificate(serial, issuer)

    def find_certificates_by_subject(self, issuer: str, subject: str) -> list[CertificateRecord]:
        return self.certificates.find_certificates_by_subject(issuer, subject)

    def list_certificates(
        self, *, limit: int = 100, offset: int = 0, status: CertStatus | None = None, profile: str | None = None
    ) -> list[CertificateRecord]:
        return self.certificates.list_certificates(limit=limit, offset=offset, status=status, profile=profile)

    def count_certificates(self, *, status: CertStatus | None = None) -> int:
        return self.certificates.count_certificates(status=status)

    # -- revocations and CRL numbers (revocations.py) -------------------------------------------

    def revoke(
        self, serial: int, issuer: str, *, reason: int, revoked_at: datetime, actor: Actor = SERVICE,
        comment: str | None = None,
    ) -> CertificateRecord:
        return self.revocations.revoke(
            serial, issuer, reason=reason, revoked_at=revoked_at, actor=actor, comment=comment
        )

    def iter_revoked(self, issuer: str, *, batch_size: int = 1000) -> Iterator[RevokedEntry]:
        return self.revocations.iter_revoked(issuer, batch_size=batch_size)

    def next_crl_number(self, issuer: str) -> int:
        return self.revocations.next_crl_number(issuer)

    # -- published CRLs (crls.py) ---------------------------------------------------------------

    def store_crl(
        self, *, issuer: str, crl_number: int, der: bytes, this_update: datetime, next_update: datetime,
        revoked_count: int,
    ) -> None:
        self.crls.store_crl(
            issuer=issuer, crl_number=crl_number, der=der, this_update=this_update, next_update=next_update,
            revoked_count=revoked_count,
        )

    def latest_crl(self, issuer: str, *, newer_than: int = 0) -> PublishedCrlRecord | None:
        return self.crls.latest_crl(issuer, newer_than=newer_than)

    # -- audit log (audit.py) -------------------------------------------------------------------

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
        self.audit.record_operation(
            profile=profile, operation=operation, message_type=message_type, transaction_id=transaction_id,
            outcome=outcome, detail=detail, requester_ip=requester_ip,
        )

    def list_operations(
        self, *, limit: int = 100, offset: int = 0, profile: str | None = None, transaction_id: str | None = None
    ) -> list[OperationRecord]:
        return self.audit.list_operations(limit=limit, offset=offset, profile=profile, transaction_id=transaction_id)

    # -- hash-chained audit log of state changes (audit_chain.py) -------------------------------

    def append_audit(self, entry: AuditEntry) -> int:
        return self.audit_chain.append_audit(entry)

    def verify_audit(self) -> VerifyReport:
        return self.audit_chain.verify_audit()

    def search_audit(self, wanted: AuditFilter) -> list[AuditRecord]:
        return self.audit_chain.search_audit(wanted)

    def list_audit(self, *, limit: int = 100, offset: int = 0) -> list[AuditRecord]:
        return self.audit_chain.list_audit(limit=limit, offset=offset)

    # -- reports (reports.py) -------------------------------------------------------------------

    def search_certificates(self, wanted: CertificateFilter) -> list[CertificateRecord]:
        return self.reports.search_certificates(wanted)

    def search_keyed_certificates(self, wanted: CertificateFilter) -> list[KeyedCertificate]:
        return self.reports.search_keyed_certificates(wanted)

    def search_events(self, wanted: EventFilter) -> list[OperationRecord]:
        return self.reports.search_events(wanted)

    # -- Intune outbox (outbox.py) --------------------------------------------------------------

    def outbox_add(
        self, *, kind: str, transaction_id: str | None, payload: Mapping[str, Any], now: datetime | None = None
    ) -> int:
        return self.outbox.outbox_add(kind=kind, transaction_id=transaction_id, payload=payload, now=now)

    def outbox_due(self, *, now: datetime, limit: int = 20) -> list[OutboxRecord]:
        return self.outbox.outbox_due(now=now, limit=limit)

    def outbox_lease(self, outbox_id: int, *, expected_next_attempt_at: datetime, lease_until: datetime) -> bool:
        return self.outbox.outbox_lease(
            outbox_id, expected_next_attempt_at=expected_next_attempt_at, lease_until=lease_until
        )

    def outbox_delivered(self, outbox_id: int, *, at: datetime) -> None:
        self.outbox.outbox_delivered(outbox_id, at=at)

    def outbox_retry(self, outbox_id: int, *, next_attempt_at: datetime, error: str) -> None:
        self.outbox.outbox_retry(outbox_id, next_attempt_at=next_attempt_at, error=error)

    def outbox_dead(self, outbox_id: int, *, at: datetime, error: str) -> None:
        self.outbox.outbox_dead(outbox_id, at=at, error=error)

    def requeue(self, outbox_id: int, now: datetime, *, actor: Actor = SERVICE) -> bool:
        return self.outbox.requeue(outbox_id, now, actor=actor)

    def outbox_counts(self) -> dict[str, int]:
        return self.outbox.outbox_counts()

    def list_outbox(self, *, limit: int = 100, include_delivered: bool = False) -> list[OutboxRecord]:
        return self.outbox.list_outbox(limit=limit, include_delivered=include_delivered)

    # -- Intune revocation requests (intune_revocations.py) -------------------------------------

    def record_revocation_request(
        self, *, request_context: str, serial_number: str, issuer_name: str | None, ca_configuration: str | None
    ) -> IntuneRevocationRecord:
        return self.intune_revocations.record_revocation_request(
            request_context=request_context, serial_number=serial_number, issuer_name=issuer_name,
            ca_configuration=ca_configuration,
        )

    def get_revocation_request(self, request_context: str) -> IntuneRevocationRecord | None:
        return self.intune_revocations.get_revocation_request(request_context)

    def set_revocation_result(self, request_context: str, *, code: int, message: str) -> None:
        self.intune_revocations.set_revocation_result(request_context, code=code, message=message)

    def revocation_sync_summary(self) -> RevocationSyncSummary:
        return self.intune_revocations.revocation_sync_summary()

    def revocation_results_to_upload(self, *, limit: int = 500) -> list[IntuneRevocationRecord]:
        return self.intune_revocations.revocation_results_to_upload(limit=limit)

    def mark_revocation_results_uploaded(self, request_contexts: Sequence[str], *, at: datetime) -> None:
        self.intune_revocations.mark_revocation_results_uploaded(request_contexts, at=at)

    # -- named API tokens (tokens.py) -----------------------------------------------------------

    def add_token(
        self, *, name: str, scopes: Sequence[str], token_hash: str, prefix: str, actor: Actor
    ) -> TokenRecord:
        return self.tokens.add_token(name=name, scopes=scopes, token_hash=token_hash, prefix=prefix, actor=actor)

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        return self.tokens.token_by_hash(token_hash)

    def list_tokens(self) -> list[TokenRecord]:
        return self.tokens.list_tokens()

    def revoke_token(self, name: str, *, at: datetime, actor: Actor) -> TokenRecord | None:
        return self.tokens.revoke_token(name, at=at, actor=actor)

    def touch_token(self, token_id: int, *, at: datetime, unless_since: datetime) -> None:
        self.tokens.touch_token(token_id, at=at, unless_since=unless_since)

    def has_active_tokens(self) -> bool:
        return self.tokens.has_active_tokens()

    # -- certificates bound to devices, their OCSP holds, Graph delta links (devices.py) --------

    @cached_property
    def devices(self) -> DeviceRepository:
        return DeviceRepository(self._engine)

    def holds_changed_at(self) -> datetime | None:
        return self.devices.holds_changed_at()
