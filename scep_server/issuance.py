"""Deciding and issuing one claimed transaction: validate → policy → sign → store → notify.

Used for a PKCSReq/RenewalReq as it arrives and, for profiles with ``on_intune_unavailable: pending``,
again from the background when Intune could not be asked at first. The transaction row is claimed
(PENDING) before anything here runs, and every path ends by moving it on: ISSUED, FAILED, or
deferred for a later attempt.

Invariants:
- nothing is signed unless the validator accepted the request (or, for RenewalReq, the request is
  signed by a valid certificate this CA issued, checked before the claim);
- a certificate is returned only after it is stored;
- a certificate is stored before its transaction is completed, and the transaction is completed only
  after the validator acknowledged the issuance, so a retry or CertPoll never sees it earlier;
- a certificate whose success notification Intune did not acknowledge is revoked
  (cessationOfOperation), never delivered, and Intune is told through a failure notification; the
  transaction is failed so a retry starts afresh.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .ca.authority import CertificateAuthority
from .ca.issue import IssuancePolicy, build_certificate, check_csr, describe_sans, thumbprints
from .challenge import ChallengeValidator, IssuedCertificate, ValidationRequest
from .errors import BadRequest, PKIFailure, StoreError, UpstreamError
from .revocation import CrlCache
from .scep.message import DecodeOptions
from .store import NewCertificate, Store, TransactionNotPending, TransactionRecord

log = logging.getLogger("scep_server.issuance")

# HRESULTs for Intune failure notifications.
E_FAIL = 0x80004005  # unspecified failure (CA or store)
E_INVALIDARG = 0x80070057  # the request breaks this profile's issuance policy
CESSATION_OF_OPERATION = 5  # RFC 5280 §5.3.1 CRLReason
SUPERSEDED = 4
RETRY_FIRST = timedelta(seconds=5)
RETRY_MAX = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Profile:
    """A configured SCEP profile, ready to serve."""

    name: str
    validator: ChallengeValidator
    policy: IssuancePolicy
    decode: DecodeOptions
    allow_renewal: bool
    defer_when_unavailable: bool = False
    pending_timeout: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Deferred:
    """The validator could not decide now; the transaction waits for a background attempt."""

    reason: str


class IssuanceService:
    """Validates, issues and records certificates for claimed transactions."""

    def __init__(self, ca: CertificateAuthority, store: Store, crls: CrlCache) -> None:
        self.ca = ca
        self.store = store
        self.crls = crls

    def process(
        self, profile: Profile, validation: ValidationRequest, *, renewal: bool
    ) -> x509.Certificate | Deferred:
        """Decide a freshly claimed transaction. Raises PKIFailure (already recorded) on refusal."""
        try:
            if not renewal or profile.validator.validates_renewals:
                profile.validator.validate(validation)
        except UpstreamError as exc:
            if profile.defer_when_unavailable:
                return self._defer(profile, validation, exc, attempts=0)
            self._fail(profile, validation, BadRequest(f"the challenge could not be validated now: {exc.detail}"))
        except PKIFailure as failure:
            self._fail(profile, validation, failure)
        return self._issue_validated(profile, validation)

    def retry_deferred(self, profile: Profile, record: TransactionRecord, now: datetime | None = None) -> None:
        """One background attempt at a deferred transaction (already leased by the caller)."""
        assert record.csr_der is not None
        now = now or datetime.now(UTC)
        csr = x509.load_der_x509_csr(record.csr_der)
        validation = ValidationRequest(profile.name, record.transaction_id, csr, record.csr_der, record.requester_ip)
        try:
            profile.validator.validate(validation)
        except UpstreamError as exc:
            if now - record.created_at > profile.pending_timeout:
                self._fail(profile, validation, BadRequest(f"Intune stayed unavailable for too long: {exc.detail}"))
            self._defer(profile, validation, exc, attempts=record.attempts, reschedule=True)
            return
        except PKIFailure as failure:
            self._fail(profile, validation, failure)
        self._issue_validated(profile, validation)

    def _issue_validated(self, profile: Profile, validation: ValidationRequest) -> x509.Certificate:
        certificate = self._build(profile, validation)
        try:
            # Recorded first, handed out last: until the transaction is completed below, a retry or a
            # CertPoll of this transaction is answered PENDING.
            self.store.record_issued(
                profile=profile.name, transaction_id=None,
                certificate=self._new_certificate(certificate, profile, validation),
            )
        except StoreError as exc:
            profile.validator.notify_failed(validation, E_FAIL, "the certificate could not be stored")
            raise UpstreamError(f"the certificate store failed: {exc}") from exc
        self._confirm(profile, validation, certificate)
        self._complete(profile, validation, certificate)
        log.info(
            "issued serial=%x profile=%s transaction=%s subject=%r",
            certificate.serial_number, profile.name, validation.transaction_id,
            certificate.subject.rfc4514_string()[:200],
        )
        return certificate

    def _build(self, profile: Profile, validation: ValidationRequest) -> x509.Certificate:
        try:
            check_csr(validation.csr, profile.policy)
            return build_certificate(validation.csr, self.ca, profile.policy)
        except PKIFailure as failure:
            profile.validator.notify_failed(validation, E_INVALIDARG, failure.detail)
            self._fail(profile, validation, failure)
        except Exception as exc:  # an odd CSR or an unusable CA: never a 500, never a stuck transaction
            log.error("building the certificate failed profile=%s transaction=%s: %s: %s",
                      profile.name, validation.transaction_id, type(exc).__name__, exc)
            refusal = BadRequest(f"the certificate could not be built from this request ({type(exc).__name__})")
            profile.validator.notify_failed(validation, E_FAIL, refusal.detail)
            self._fail(profile, validation, refusal)

    def _confirm(self, profile: Profile, validation: ValidationRequest, certificate: x509.Certificate) -> None:
        """Tell the validator; when it does not acknowledge, withdraw the certificate for good."""
        try:
            profile.validator.notify_issued(validation, IssuedCertificate(certificate, self.ca.ca_cert, self.ca.name))
        except UpstreamError as exc:
            reason = f"the issuance was not acknowledged ({exc.detail}); certificate {certificate.serial_number:x} " \
                     "was revoked and not delivered"
            self._withdraw(certificate)
            log.error("profile=%s transaction=%s: %s", profile.name, validation.transaction_id, reason)
            profile.validator.notify_failed(validation, E_FAIL, reason)
            self._fail(profile, validation, BadRequest(reason))

    def _complete(self, profile: Profile, validation: ValidationRequest, certificate: x509.Certificate) -> None:
        try:
            self.store.complete_transaction(
                profile=profile.name, transaction_id=validation.transaction_id,
                serial=certificate.serial_number, issuer=self.ca.issuer_name,
                csr_sha256=hashlib.sha256(validation.csr_der).hexdigest(),
            )
        except TransactionNotPending as exc:
            # Another handler finished this transaction first (a lease ran out): ours is never handed out.
            self._withdraw(certificate, reason=SUPERSEDED)
            raise UpstreamError(f"transaction {validation.transaction_id!r} was completed concurrently") from exc

    def _withdraw(self, certificate: x509.Certificate, *, reason: int = CESSATION_OF_OPERATION) -> None:
        try:
            self.store.revoke(
                certificate.serial_number, self.ca.issuer_name, reason=reason, revoked_at=datetime.now(UTC)
            )
            self.crls.invalidate()
        except StoreError as exc:  # it was never handed out; the transaction is not completed
            log.error("could not revoke withdrawn certificate %x: %s", certificate.serial_number, exc)

    def _defer(
        self, profile: Profile, validation: ValidationRequest, exc: UpstreamError, *, attempts: int,
        reschedule: bool = False,
    ) -> Deferred:
        delay = min(RETRY_FIRST * (2 ** min(attempts, 10)), RETRY_MAX)
        if exc.retry_after:
            delay = max(delay, timedelta(seconds=exc.retry_after))
        delay = delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
        next_attempt = datetime.now(UTC) + delay
        if reschedule:
            self.store.reschedule_deferred(
                profile=profile.name, transaction_id=validation.transaction_id,
                next_attempt_at=next_attempt, error=exc.detail,
            )
        else:
            self.store.defer_transaction(
                profile=profile.name, transaction_id=validation.transaction_id,
                next_attempt_at=next_attempt, error=exc.detail,
            )
        log.warning(
            "validation deferred profile=%s transaction=%s next_attempt=%s reason=%r",
            profile.name, validation.transaction_id, next_attempt.isoformat(timespec="seconds"), exc.detail,
        )
        return Deferred(exc.detail)

    def _fail(self, profile: Profile, validation: ValidationRequest, failure: PKIFailure) -> NoReturn:
        """Record the refusal on the transaction and raise it."""
        self.store.record_failure(
            profile=profile.name, transaction_id=validation.transaction_id,
            fail_info=int(failure.fail_info), reason=failure.detail,
        )
        raise failure

    def _new_certificate(
        self, certificate: x509.Certificate, profile: Profile, validation: ValidationRequest
    ) -> NewCertificate:
        sha1, sha256 = thumbprints(certificate)
        return NewCertificate(
            serial=certificate.serial_number,
            issuer=self.ca.issuer_name,
            subject=certificate.subject.rfc4514_string(),
            sans=describe_sans(certificate),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            profile=profile.name,
            transaction_id=validation.transaction_id,
            requester_ip=validation.requester_ip,
            der=certificate.public_bytes(Encoding.DER),
            sha1_thumbprint=sha1,
            sha256_thumbprint=sha256,
        )
