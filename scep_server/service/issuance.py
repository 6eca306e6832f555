"""Deciding and issuing one claimed transaction: validate → policy → sign → store → notify.

Used for a PKCSReq/RenewalReq as it arrives and, for profiles with ``on_validator_unavailable: pending``,
again from the background when Intune could not be asked at first. The transaction row is claimed
(PENDING) before anything here runs, and every path ends by moving it on: ISSUED, FAILED, or
deferred for a later attempt.

Invariants:
- nothing is signed unless the validator accepted the request (or, for RenewalReq, the request is
  signed by a valid certificate this CA issued, checked before the claim);
- a certificate is returned only after it is stored;
- a certificate is stored linked to its (still PENDING) transaction before that is completed, and the
  transaction is completed only after the validator acknowledged the issuance, so a retry or CertPoll
  never sees it earlier;
- one transaction, one valid certificate: when a handler dies between storing and completing, the next
  claim of the transaction with the same CSR (after the stale-claim lease, or the background retry of a
  deferred one) re-delivers the stored certificate, acknowledged again first, instead of issuing a
  second; every other certificate stored for the transaction, never delivered, is revoked;
- a certificate whose success notification Intune did not acknowledge is revoked
  (cessationOfOperation), never delivered, and Intune is told through a failure notification; the
  transaction is failed so a retry starts afresh. Only a certificate another handler already delivered
  (its transaction ISSUED with it) is never withdrawn;
- a stored certificate whose device never came back for it (``ABANDONED_AFTER``) is revoked and its
  transaction failed (``withdraw_abandoned``, run in the background).

A validator that decides locally and confirms nothing (``confirms_issuance`` False: ``static``) lets a
new transaction skip the claim: ``prepare_at_once`` validates (a RenewalReq only if the validator
``validates_renewals``, as on the claimed path) and signs, the caller builds its reply, ``record_at_once``
stores the transaction ISSUED with its certificate and audit record in one database transaction, and
only then is the certificate handed out. A concurrent request of the same transaction that was stored
first wins; the loser's certificate is stored withdrawn (superseded) and never handed out. A
certificate whose reply cannot be built, or that the store fails to record, is neither stored nor
handed out: the request fails (a CertRep FAILURE, or a 503 the device retries) with nothing stored, and
only the certificate's serial number is spent.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.csr import check_csr, describe_sans
from scep_server.ca.device_ids import device_id_of
from scep_server.ca.issue import build_certificate, thumbprints
from scep_server.ca.live import LiveAuthority, as_live
from scep_server.challenge import IssuanceNarrowing, IssuedCertificate, ValidationRequest
from scep_server.errors import (
    BadRequest,
    Conflict,
    FailInfo,
    NotFound,
    PKIFailure,
    RetryLater,
    StoreError,
    Unavailable,
    ValidatorUnavailable,
)
from scep_server.pki.reasons import CRLReason
from scep_server.scep.types import MessageType
from scep_server.service.profile import Profile
from scep_server.service.revocation import RevocationService
from scep_server.store import (
    AlreadyRevoked,
    AuditEvent,
    DuplicateCertificate,
    NewCertificate,
    NewTransaction,
    Store,
    TransactionExists,
    TransactionNotPending,
    TransactionRecord,
)

log = logging.getLogger("scep_server.service.issuance")

# HRESULTs for Intune failure notifications.
E_FAIL = 0x80004005  # unspecified failure (CA or store)
E_INVALIDARG = 0x80070057  # the request breaks this profile's issuance policy
RETRY_FIRST = timedelta(seconds=5)
RETRY_MAX = timedelta(minutes=5)
# A certificate stored for a transaction whose handler died, and not collected by the device since.
ABANDONED_AFTER = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Deferred:
    """The validator could not decide now; the transaction waits for a background attempt."""

    reason: str


class IssuanceService:
    """Validates, issues and records certificates for claimed transactions."""

    def __init__(
        self, ca: CertificateAuthority | LiveAuthority, store: Store, revocations: RevocationService
    ) -> None:
        """``ca``: a LiveAuthority issues with whichever generation is active (``ca rollover activate``).
        ``revocations`` withdraws what must not be delivered, so the CRL and OCSP answers follow at once."""
        self.authority = as_live(ca)
        self.store = store
        self.revocations = revocations

    @property
    def ca(self) -> CertificateAuthority:
        """The issuing CA now."""
        return self.authority.current()

    def _sign(
        self, profile: Profile, validation: ValidationRequest, narrowing: IssuanceNarrowing | None = None
    ) -> x509.Certificate:
        """The certificate under the profile's policy, narrowed as the validator said (BadRequest when
        the narrowing would widen it)."""
        ca = self.ca
        policy = profile.policy.for_generation(ca.generation)
        if narrowing is not None:
            policy = policy.narrowed(sans=narrowing.sans, validity_days=narrowing.validity_days)
        return build_certificate(validation.csr, ca, policy)

    def _issuer_of(self, certificate: x509.Certificate) -> CertificateAuthority:
        """The generation's CA that issued ``certificate`` (it may have been replaced since)."""
        generation = self.authority.generations().issued_by(certificate.issuer)
        return generation.ca if generation is not None else self.ca

    def decide(
        self, profile: Profile, validation: ValidationRequest, record: TransactionRecord, *, renewal: bool
    ) -> x509.Certificate | Deferred:
        """Decide a freshly claimed transaction: the certificate a handler stored for it and did not
        deliver (``record.serial``, same CSR), else a validated new one. PKIFailure (recorded) on refusal."""
        if record.serial is not None:
            return self._redeliver(profile, validation, record.serial)
        return self.process(profile, validation, renewal=renewal)

    def process(
        self, profile: Profile, validation: ValidationRequest, *, renewal: bool
    ) -> x509.Certificate | Deferred:
        """Validate and issue for a freshly claimed transaction. Raises PKIFailure (already recorded) on refusal."""
        narrowing: IssuanceNarrowing | None = None
        try:
            narrowing = _validate(profile, validation, renewal=renewal)
        except ValidatorUnavailable as exc:
            if profile.defer_when_unavailable:
                return self._defer(profile, validation, exc, attempts=0)
            self._fail(profile, validation, RetryLater(f"the challenge could not be validated now: {exc.detail}"))
        except PKIFailure as failure:
            self._fail(profile, validation, failure)
        return self._issue_validated(profile, validation, narrowing)

    def issues_at_once(self, profile: Profile) -> bool:
        """Whether a new transaction of ``profile`` may be decided and stored in one step (see the module)."""
        return not profile.validator.confirms_issuance

    def prepare_at_once(
        self, profile: Profile, validation: ValidationRequest, *, renewal: bool
    ) -> x509.Certificate | None:
        """Validate (as ``process`` does: a RenewalReq only if the validator ``validates_renewals``) and sign
        for a transaction not stored yet (``issues_at_once``). None, with nothing recorded, when the request
        is refused, undecided or cannot be built: the caller then takes the claimed path, which decides it
        again and records why."""
        try:
            narrowing = _validate(profile, validation, renewal=renewal)
            check_csr(validation.csr, profile.policy)
            return self._sign(profile, validation, narrowing)
        except Exception:  # noqa: BLE001 - every refusal is recorded by the claimed path, which repeats it
            return None

    def record_at_once(
        self, profile: Profile, validation: ValidationRequest, certificate: x509.Certificate,
        transaction: NewTransaction, event: AuditEvent,
    ) -> bool:
        """Store the transaction ISSUED with ``certificate`` and ``event``; True once it may be handed out.
        False when a concurrent request of the transaction was stored first: ``certificate`` is then stored
        withdrawn (superseded), and the caller answers as for a retry.

        When the store fails (``StoreError``, ``StoreUnavailable`` among them) the error goes on to the
        caller, which answers 503 with Retry-After, and ``certificate`` is never handed out: no certificate
        leaves the server unrecorded. Nothing was stored, so the device's retry is issued afresh and this
        certificate's serial number is spent; only when a lost connection left the commit in doubt may it
        have been stored after all, and the retry then finds the transaction and is sent this one."""
        new = self._new_certificate(certificate, profile, validation)
        try:
            self.store.record_enrollment(transaction, new, event)
        except TransactionExists:
            self._record_superseded(profile, validation, new)
            return False
        except DuplicateCertificate as exc:
            raise Unavailable(f"the certificate store failed: {exc}") from exc
        except StoreError as exc:
            _log_not_stored(profile, validation, certificate, exc)
            raise
        log.info(
            "issued serial=%x profile=%s transaction=%s subject=%r",
            certificate.serial_number, profile.name, validation.transaction_id,
            certificate.subject.rfc4514_string()[:200],
        )
        return True

    def _record_superseded(self, profile: Profile, validation: ValidationRequest, new: NewCertificate) -> None:
        try:
            self.store.record_withdrawn(new, reason=int(CRLReason.SUPERSEDED), revoked_at=datetime.now(UTC))
        except StoreError as exc:
            log.error("profile=%s transaction=%s: a concurrent request was stored first, and certificate %x "
                      "could not be stored withdrawn (%s); it was not handed out", profile.name,
                      validation.transaction_id, new.serial, exc)
            raise
        log.warning("profile=%s transaction=%s: a concurrent request was stored first; certificate %x "
                    "was stored withdrawn", profile.name, validation.transaction_id, new.serial)

    def retry_deferred(self, profile: Profile, record: TransactionRecord, now: datetime | None = None) -> None:
        """One background attempt at a deferred transaction (already leased by the caller)."""
        assert record.csr_der is not None
        now = now or datetime.now(UTC)
        csr = x509.load_der_x509_csr(record.csr_der)
        validation = ValidationRequest(profile.name, record.transaction_id, csr, record.csr_der, record.requester_ip,
                                       renewal=record.message_type == MessageType.RENEWAL_REQ)
        if record.serial is not None:  # an earlier attempt stored the certificate and died
            self._redeliver(profile, validation, record.serial)
            return
        narrowing: IssuanceNarrowing | None = None
        try:
            narrowing = profile.validator.validate(validation)
        except ValidatorUnavailable as exc:
            if now - record.created_at > profile.pending_timeout:
                self._fail(profile, validation, RetryLater(f"Intune stayed unavailable for too long: {exc.detail}"))
            self._defer(profile, validation, exc, attempts=record.attempts, reschedule=True)
            return
        except PKIFailure as failure:
            self._fail(profile, validation, failure)
        self._issue_validated(profile, validation, narrowing)

    def withdraw_abandoned(self, profiles: Mapping[str, Profile], now: datetime | None = None) -> int:
        """Revoke the certificates stored for transactions whose handler died and whose device has not come
        back for them within ``ABANDONED_AFTER``; their transactions fail, the validator is told. How many."""
        now = now or datetime.now(UTC)
        before = now - ABANDONED_AFTER
        withdrawn = 0
        for record in self.store.undelivered_before(before=before):
            reason = "the certificate was stored but never collected; it was revoked"
            serial = self.revocations.abandon(
                profile=record.profile, transaction_id=record.transaction_id, before=before,
                fail_info=int(FailInfo.BAD_REQUEST), reason=reason, revoked_at=now,
            )
            if serial is None:
                continue
            withdrawn += 1
            log.warning("profile=%s transaction=%s: certificate %x was never collected; revoked",
                        record.profile, record.transaction_id, serial)
            self._notify_abandoned(profiles.get(record.profile), record, reason)
        return withdrawn

    def _notify_abandoned(self, profile: Profile | None, record: TransactionRecord, reason: str) -> None:
        if profile is None or record.csr_der is None:
            return
        csr = x509.load_der_x509_csr(record.csr_der)
        validation = ValidationRequest(profile.name, record.transaction_id, csr, record.csr_der, record.requester_ip)
        profile.validator.notify_failed(validation, E_FAIL, reason)

    def _issue_validated(
        self, profile: Profile, validation: ValidationRequest, narrowing: IssuanceNarrowing | None = None
    ) -> x509.Certificate:
        certificate = self._build(profile, validation, narrowing)
        self._store_undelivered(profile, validation, certificate)
        self._confirm(profile, validation, certificate)
        self._complete(profile, validation, certificate)
        log.info(
            "issued serial=%x profile=%s transaction=%s subject=%r",
            certificate.serial_number, profile.name, validation.transaction_id,
            certificate.subject.rfc4514_string()[:200],
        )
        return certificate

    def _redeliver(self, profile: Profile, validation: ValidationRequest, serial: int) -> x509.Certificate:
        """The certificate stored for this transaction (same CSR) by a handler that did not finish: told to
        the validator again (Intune's acknowledgement may never have come), then delivered."""
        stored = self.store.get_certificate(serial, None)  # of any generation: one may have been activated since
        if stored is None:
            raise StoreError(f"transaction {validation.transaction_id!r} names certificate {serial:x}, "
                             "which is not in the store")
        certificate = x509.load_der_x509_certificate(stored.der)
        log.warning("profile=%s transaction=%s: re-delivering certificate %x, stored by a handler that did "
                    "not finish", profile.name, validation.transaction_id, serial)
        self._confirm(profile, validation, certificate)
        self._complete(profile, validation, certificate)
        return certificate

    def _build(
        self, profile: Profile, validation: ValidationRequest, narrowing: IssuanceNarrowing | None = None
    ) -> x509.Certificate:
        try:
            check_csr(validation.csr, profile.policy)
            return self._sign(profile, validation, narrowing)
        except PKIFailure as failure:
            profile.validator.notify_failed(validation, E_INVALIDARG, failure.detail)
            self._fail(profile, validation, failure)
        except Exception as exc:  # an odd CSR or an unusable CA: never a 500, never a stuck transaction
            log.error("building the certificate failed profile=%s transaction=%s: %s: %s",
                      profile.name, validation.transaction_id, type(exc).__name__, exc)
            refusal = BadRequest(f"the certificate could not be built from this request ({type(exc).__name__})")
            profile.validator.notify_failed(validation, E_FAIL, refusal.detail)
            self._fail(profile, validation, refusal)

    def _store_undelivered(
        self, profile: Profile, validation: ValidationRequest, certificate: x509.Certificate
    ) -> None:
        """Recorded first, handed out last: until the transaction is completed, a retry or a CertPoll of it
        is answered PENDING, and a handler that dies leaves the certificate for the next claim to deliver."""
        try:
            self.store.record_undelivered(
                profile=profile.name, transaction_id=validation.transaction_id,
                csr_sha256=hashlib.sha256(validation.csr_der).hexdigest(),
                certificate=self._new_certificate(certificate, profile, validation),
            )
        except TransactionNotPending as exc:  # a reclaim took the transaction over; nothing was stored
            raise Unavailable(f"transaction {validation.transaction_id!r} was taken over concurrently") from exc
        except (StoreError, Conflict) as exc:  # Conflict: a serial collision (DuplicateCertificate)
            profile.validator.notify_failed(validation, E_FAIL, "the certificate could not be stored")
            raise Unavailable(f"the certificate store failed: {exc}") from exc

    def _confirm(self, profile: Profile, validation: ValidationRequest, certificate: x509.Certificate) -> None:
        """Tell the validator; when it does not acknowledge, withdraw the certificate for good."""
        try:
            issuer = self._issuer_of(certificate)
            profile.validator.notify_issued(validation, IssuedCertificate(certificate, issuer.ca_cert, issuer.name))
        except ValidatorUnavailable as exc:
            if not self._withdraw(validation, certificate):
                log.warning("profile=%s transaction=%s: certificate %x was acknowledged and delivered by "
                            "another handler", profile.name, validation.transaction_id, certificate.serial_number)
                return
            reason = f"the issuance was not acknowledged ({exc.detail}); certificate {certificate.serial_number:x} " \
                     "was revoked and not delivered"
            log.error("profile=%s transaction=%s: %s", profile.name, validation.transaction_id, reason)
            profile.validator.notify_failed(validation, E_FAIL, reason)
            self._fail(profile, validation, RetryLater(reason))

    def _complete(self, profile: Profile, validation: ValidationRequest, certificate: x509.Certificate) -> None:
        try:
            self.store.complete_transaction(
                profile=profile.name, transaction_id=validation.transaction_id,
                serial=certificate.serial_number, issuer=certificate.issuer.rfc4514_string(),
                csr_sha256=hashlib.sha256(validation.csr_der).hexdigest(),
            )
        except (TransactionNotPending, AlreadyRevoked) as exc:
            # Another handler finished this transaction otherwise (a lease ran out), or withdrew this
            # certificate: ours is never handed out.
            self._withdraw(validation, certificate, reason=CRLReason.SUPERSEDED)
            raise ValidatorUnavailable(f"transaction {validation.transaction_id!r} was completed concurrently") from exc

    def _withdraw(
        self, validation: ValidationRequest, certificate: x509.Certificate, *,
        reason: CRLReason = CRLReason.CESSATION_OF_OPERATION,
    ) -> bool:
        """Revoke a stored certificate that must not be delivered; False when another handler delivered it
        (its transaction is ISSUED with it), which leaves it valid."""
        try:
            return self.revocations.withdraw_undelivered(
                profile=validation.profile, transaction_id=validation.transaction_id,
                serial=certificate.serial_number, reason=reason, issuer=certificate.issuer.rfc4514_string(),
            )
        except (StoreError, Conflict, NotFound) as exc:  # never handed out: the next claim revokes it
            log.error("could not revoke withdrawn certificate %x: %s", certificate.serial_number, exc)
            return True

    def _defer(
        self, profile: Profile, validation: ValidationRequest, exc: ValidatorUnavailable, *, attempts: int,
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
        device = device_id_of(certificate, profile.device_id)
        return NewCertificate(
            serial=certificate.serial_number,
            issuer=certificate.issuer.rfc4514_string(),
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
            device_id=device.value if device else None,
            device_id_kind=device.kind if device else None,
        )


def _validate(profile: Profile, validation: ValidationRequest, *, renewal: bool) -> IssuanceNarrowing | None:
    """The validator's decision on the request, told whether it is a RenewalReq; None when it does not
    decide renewals (``_validates``) or grants all that was asked."""
    if not _validates(profile, renewal=renewal):
        return None
    return profile.validator.validate(replace(validation, renewal=renewal))


def _validates(profile: Profile, *, renewal: bool) -> bool:
    """Whether the validator decides this request: a RenewalReq, already vouched for by its signer (a
    valid certificate of ours), only if the validator asks to see renewals too."""
    return not renewal or profile.validator.validates_renewals


def _log_not_stored(
    profile: Profile, validation: ValidationRequest, certificate: x509.Certificate, exc: StoreError
) -> None:
    log.error("profile=%s transaction=%s: certificate %x could not be stored (%s); it was not handed out and "
              "the device is told to retry", profile.name, validation.transaction_id, certificate.serial_number,
              exc)
