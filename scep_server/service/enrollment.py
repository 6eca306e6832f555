"""One PKIOperation from bytes in to CertRep out: decode → challenge → issue → store → encode.

Invariants this module keeps:
- no certificate is issued unless the profile's validator accepted the request (PKCSReq) or the request
  is signed by a valid certificate this CA issued (RenewalReq);
- a PKCSReq is signed with the key its CSR certifies (proof of possession, RFC 8894 §2.3) or with a
  valid certificate this CA issued, so a captured envelope re-signed by a stranger gets nothing but the
  answer an unreadable envelope gets;
- a certificate leaves the server only after it is stored;
- one transactionID yields at most one certificate: a retry with the same CSR gets the same one, also
  after the handler that stored it died (see ``issuance``);
- CertPoll answers only the requester (same signer key, its CSR subject, this CA as issuer) and GetCert
  only the certificate's holder (same key, or a certificate of ours with the same subject) unless the
  profile opts in (``get_cert: any``), and only certificates of that profile; a stranger cannot tell
  such a refusal from an unknown transaction or serial;
- the device's failInfoText is the failure's fixed ``public_text``; its detail goes only to the log and
  the audit table.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from scep_server import logs
from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.csr import check_renewal_identity
from scep_server.ca.generations import Generations
from scep_server.ca.live import LiveAuthority, as_live
from scep_server.ca.ra_keyring import RaIdentity
from scep_server.challenge import ValidationRequest
from scep_server.errors import (
    BadCertId,
    BadRequest,
    Conflict,
    FailInfo,
    NotFound,
    PKIFailure,
    StoreError,
    Unavailable,
    failure_for,
)
from scep_server.scep import message
from scep_server.scep.cms import SignedMessage
from scep_server.scep.envelope import EnvelopeRejected, addressed_recipient
from scep_server.scep.message import (
    CertificateRequest,
    CertPoll,
    CertRepSigner,
    GetCert,
    GetCrl,
    PkiRequest,
    ReplyContext,
)
from scep_server.scep.types import MessageType
from scep_server.service.issuance import Deferred, IssuanceService
from scep_server.service.outcome import OperationStatus, Outcome
from scep_server.service.profile import GetCertScope, Profile
from scep_server.service.publishing import CrlSource
from scep_server.service.reissue_poll import ReissuePoll
from scep_server.store import (
    AuditEvent,
    CertificateRecord,
    CertStatus,
    NewTransaction,
    Store,
    TransactionRecord,
    TransactionState,
    serial_storable,
)

log = logging.getLogger("scep_server.scep")

MAX_IP_CHARS = 64  # the store's column; X-Forwarded-For chains can be longer
DEFAULT_CLAIM_LEASE = timedelta(minutes=5)


class EnrollmentService:
    """Answers PKIOperation messages for every profile of one CA."""

    def __init__(
        self, ca: CertificateAuthority | LiveAuthority, store: Store, profiles: Mapping[str, Profile],
        crls: CrlSource, issuance: IssuanceService, *, claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
        reissue_poll: ReissuePoll | None = None,
    ) -> None:
        """``ca``: a LiveAuthority follows RA rotations on disk. ``claim_lease``: how long a PENDING
        transaction's handler is presumed alive; after that a retry of the request takes the transaction
        over (and delivers what that handler stored). ``reissue_poll``: the Intune revocation round a
        PKCSReq for a subject or device that holds a valid certificate waits for (service/reissue_poll.py)."""
        self.authority = as_live(ca)
        self.store = store
        self.profiles = profiles
        self.crls = crls
        self.claim_lease = claim_lease
        self.issuance = issuance
        self.reissue_poll = reissue_poll

    @property
    def ca(self) -> CertificateAuthority:
        return self.authority.current()

    def withdraw_abandoned(self) -> int:
        """Background task: revoke stored certificates no device came back for (``IssuanceService``)."""
        return self.issuance.withdraw_abandoned(self.profiles)

    def pki_operation(self, profile: Profile, der: bytes, requester_ip: str | None) -> Outcome:
        """Answer one pkiMessage. RequestError escapes when no CertRep can be built."""
        ip = requester_ip[:MAX_IP_CHARS] if requester_ip else None
        signed, context = message.read_envelope(der)
        ra = _addressed_ra(self.authority.generations(), signed)
        context = replace(context, responder=CertRepSigner(ra.cert, ra.key))
        with logs.log_context(transaction_id=context.transaction_id):
            return self._answer(profile, signed, context, ip, ra)

    def _answer(
        self, profile: Profile, signed: SignedMessage, context: ReplyContext, ip: str | None, ra: RaIdentity
    ) -> Outcome:
        try:
            self._check_before_decrypting(profile, context)
            request = message.open_request(signed, context, ra_key=ra.key, ra_cert=ra.cert, options=profile.decode)
            outcome = self._dispatch(profile, request, ip)
        except PKIFailure as failure:
            outcome = self._failure(profile, context, failure, ip)
        except (Conflict, NotFound) as exc:
            # Another handler moved the transaction on while this one worked: the device retries, as for
            # an outage (503), and learns nothing about the transaction's state.
            self._audit(profile, context, _error_status(exc), str(exc)[:200], ip)
            raise Unavailable("the transaction changed while it was handled") from exc
        except Exception as exc:  # 503s and the unexpected: still one audit record
            self._audit(profile, context, _error_status(exc), str(exc)[:200], ip)
            raise
        if not outcome.audited:
            self._audit(profile, context, outcome.status, outcome.detail, ip)
        return replace(outcome, message_type=_type_name(context.message_type))

    def _dispatch(self, profile: Profile, request: PkiRequest, ip: str | None) -> Outcome:
        match request:
            case CertificateRequest():
                return self._enroll(profile, request, ip)
            case CertPoll():
                return self._poll(profile, request)
            case GetCert():
                return self._get_cert(profile, request)
            case GetCrl():
                return self._get_crl(request)

    def _failure(self, profile: Profile, context: ReplyContext, failure: PKIFailure, ip: str | None) -> Outcome:
        log.warning(
            "PKIOperation FAILURE profile=%s transaction=%s type=%s failInfo=%s ip=%s reason=%r",
            profile.name, context.transaction_id, _type_name(context.message_type),
            failure.fail_info.name, ip, failure.detail,
        )
        reply = message.cert_rep_failure(context, _responder(context), failure.fail_info, failure.public_text)
        return Outcome(reply, OperationStatus.failure(failure.fail_info), failure.detail)

    # PKCSReq / RenewalReq ------------------------------------------------------------------------

    def _enroll(self, profile: Profile, request: CertificateRequest, ip: str | None) -> Outcome:
        context = request.context
        if request.renewal:
            self._check_renewal_signer(profile, request)
        else:
            self._check_pkcsreq_signer(profile, request)
        transaction = NewTransaction(
            profile=profile.name, transaction_id=context.transaction_id, message_type=int(request.message_type),
            csr_der=request.csr_der, requester_ip=ip, signer_key_sha256=_signer_key_digest(request),
            subject_sha256=name_digest(request.csr.subject), received_at=datetime.now(UTC),
        )
        validation = ValidationRequest(profile.name, context.transaction_id, request.csr, request.csr_der, ip)
        if self.issuance.issues_at_once(profile):
            at_once = self._enroll_at_once(profile, request, transaction, validation)
            if at_once is not None:
                return at_once
        # Decided here, a request whose reply could not reach the device would be stored, issued and
        # acknowledged to the validator while the device is told FAILURE: refuse it before any of that.
        message.check_success_reply(context, request.cipher, request.key_transport)
        record, claimed = self.store.claim_transaction(
            profile=profile.name, transaction_id=context.transaction_id,
            message_type=transaction.message_type, csr_der=request.csr_der, requester_ip=ip,
            signer_key_sha256=transaction.signer_key_sha256, subject_sha256=transaction.subject_sha256,
            stale_after=self.claim_lease,
        )
        if not claimed:
            return self._replay(request, record)
        self._poll_revocations_before_reissue(profile, request, record)
        result = self.issuance.decide(profile, validation, record, renewal=request.renewal)
        if isinstance(result, Deferred):
            return Outcome(_pending(context), OperationStatus.PENDING, result.reason)
        _log_success(profile, request, result, ip)
        if record.serial is not None:  # stored by a handler that did not finish: counted when it was issued
            return self._success(request, [result], f"re-delivered {result.serial_number:x}")
        return replace(self._success(request, [result], f"issued {result.serial_number:x}"), issued=True)

    def _poll_revocations_before_reissue(
        self, profile: Profile, request: CertificateRequest, record: TransactionRecord
    ) -> None:
        """A new PKCSReq (not a renewal, nothing stored for it yet) waits, boundedly, for one Intune
        revocation round when its subject or device still holds a valid certificate; never fails it."""
        if self.reissue_poll is not None and not request.renewal and record.serial is None:
            self.reissue_poll.before_issuing(profile.name, request.csr)

    def _enroll_at_once(
        self, profile: Profile, request: CertificateRequest, transaction: NewTransaction,
        validation: ValidationRequest,
    ) -> Outcome | None:
        """A new transaction decided and stored in one step (see ``IssuanceService.record_at_once``); None
        when it is not new, or not issued at once: the claimed path then answers it.

        The CertRep is built before anything is stored: a reply that cannot be built (``BadAlg`` when the
        device's RSA key is too small for the key transport it asked for, say) fails the request with
        nothing stored and the one audit record of the failure, instead of leaving the transaction ISSUED
        while the device is told FAILURE. Its certificate, and one the store then fails to record
        (``StoreUnavailable``: the device is answered 503 and retries), never leaves the server; only its
        serial number is spent."""
        if self.store.transaction_exists(profile.name, transaction.transaction_id):
            return None
        certificate = self.issuance.prepare_at_once(profile, validation, renewal=request.renewal)
        if certificate is None:
            return None
        detail = f"issued {certificate.serial_number:x}"
        success = self._success(request, [certificate], detail)
        event = AuditEvent(
            profile=profile.name, operation="PKIOperation", message_type=request.context.message_type,
            transaction_id=transaction.transaction_id, outcome=str(OperationStatus.SUCCESS), detail=detail,
            requester_ip=transaction.requester_ip,
        )
        if not self.issuance.record_at_once(profile, validation, certificate, transaction, event):
            return None
        _log_success(profile, request, certificate, transaction.requester_ip)
        return replace(success, issued=True, audited=True)

    def _replay(self, request: CertificateRequest, record: TransactionRecord) -> Outcome:
        """A transactionID we have seen: same request → same answer; a different request → refused."""
        if record.csr_sha256 != hashlib.sha256(request.csr_der).hexdigest():
            raise BadRequest("this transactionID was already used for a different certification request")
        return self._transaction_state(request, record)

    def _transaction_state(self, request: PkiRequest, record: TransactionRecord) -> Outcome:
        if record.state is TransactionState.ISSUED and record.serial is not None:
            stored = self._stored_certificate(record.serial)
            return self._success(request, [stored], f"re-sent {record.serial:x}")
        if record.state is TransactionState.PENDING:
            return Outcome(_pending(request.context), OperationStatus.PENDING)
        raise failure_for(FailInfo(record.fail_info or FailInfo.BAD_REQUEST), record.fail_reason or "request failed")

    def _stored_certificate(self, serial: int) -> x509.Certificate:
        stored = self.store.get_certificate(serial, None)  # of any generation: one may have been activated since
        if stored is None:
            raise StoreError(f"transaction names certificate {serial:x}, which is not in the store")
        return x509.load_der_x509_certificate(stored.der)

    def _check_before_decrypting(self, profile: Profile, context: ReplyContext) -> None:
        """What the envelope's signer alone decides is decided before the envelope is opened: a RenewalReq
        re-signed by a stranger is refused the same way whatever its ciphertext (no decryption oracle)."""
        if context.message_type == MessageType.RENEWAL_REQ:
            self._renewal_signer(profile, context)

    def _check_renewal_signer(self, profile: Profile, request: CertificateRequest) -> None:
        """RenewalReq must be signed by an unexpired, unrevoked certificate this CA issued for this profile
        (RFC 8894 §3.3.1.2), and may only renew that identity (``check_renewal_identity``)."""
        record = self._renewal_signer(profile, request.context)
        check_renewal_identity(request.csr, x509.load_der_x509_certificate(record.der), profile.policy)

    def _renewal_signer(self, profile: Profile, context: ReplyContext) -> CertificateRecord:
        if not profile.allow_renewal:
            raise BadRequest(f"renewal is disabled for profile {profile.name}")
        signer = context.signer
        record = self._issued_by_us(signer.issuer_der, signer.serial, signer.der)
        now = datetime.now(UTC)
        if record is None:
            raise BadRequest("RenewalReq must be signed by a certificate this CA issued")
        if record.status is CertStatus.REVOKED:
            raise BadRequest(f"the renewal signer certificate {record.serial:x} is revoked")
        if now > record.not_after:
            raise BadRequest(f"the renewal signer certificate {record.serial:x} has expired")
        if record.profile != profile.name:
            raise BadRequest(f"the renewal signer certificate was issued for profile {record.profile}")
        return record

    def _check_pkcsreq_signer(self, profile: Profile, request: CertificateRequest) -> None:
        """RFC 8894 §2.3: a PKCSReq is signed with the key of the CSR it carries (the self-signed certificate
        "matching the PKCS #10 request"), or with a valid certificate this CA issued (a device renewing with
        a PKCSReq signed by its current certificate, as macOS does). Either way the signature proves
        possession of a key we can vouch for, and a stranger cannot re-sign a captured envelope. A
        self-signed signer's subject is compared only where the profile asks: Apple devices and micromdm's
        scepclient sign as ``CN=SCEP SIGNER``, certmonger with the CSR's subject."""
        if _signer_key_digest(request) == key_digest(request.csr.public_key()):
            if profile.require_signer_subject and not _signer_has_subject(request.context.signer.der,
                                                                          request.csr.subject):
                _refuse_signer(request, "the PKCSReq signer certificate does not carry the subject of its request")
            return
        signer = request.context.signer
        if not _usable(self._issued_by_us(signer.issuer_der, signer.serial, signer.der)):
            _refuse_signer(request, "the PKCSReq is signed neither with the key of its certification request "
                                    "nor with a valid certificate of this CA")

    def _issued_by_us(self, issuer_der: bytes, serial: int, der: bytes) -> CertificateRecord | None:
        """The stored certificate ``der`` if one of our CA generations issued it (the active one, or one
        a rollover replaced: its certificates renew into the active one's)."""
        issuer = next((generation.ca for generation in self.authority.generations().all()
                       if generation.ca.ca_cert.subject.public_bytes() == issuer_der), None)
        if issuer is None or not serial_storable(serial):
            return None
        record = self.store.get_certificate(serial, issuer.issuer_name)
        return record if record is not None and record.der == der else None

    # CertPoll / GetCert / GetCRL ------------------------------------------------------------------

    def _poll(self, profile: Profile, request: CertPoll) -> Outcome:
        """CertPoll (RFC 8894 §3.3.3): only the requester learns the state of its transaction."""
        transaction_id = request.context.transaction_id
        record = self.store.get_transaction(profile.name, transaction_id)
        if record is None:
            raise BadCertId(f"no transaction {transaction_id!r} in profile {profile.name}")
        mismatch = self._poll_mismatch(request, record)
        if mismatch is not None:
            raise BadCertId(f"CertPoll of transaction {transaction_id!r} refused: {mismatch}")
        return self._transaction_state(request, record)

    def _poll_mismatch(self, request: CertPoll, record: TransactionRecord) -> str | None:
        """Why this CertPoll is not the requester's, or None. Rows stored before the signer was recorded
        answer no poll (the device sends its request again)."""
        if record.signer_key_sha256 is None or record.subject_sha256 is None:
            return "the transaction predates recorded requesters"
        if _signer_key_digest(request) != record.signer_key_sha256:
            return "it is signed with another key than the request"
        if name_digest(request.subject) != record.subject_sha256:
            return "it names another subject than the request"
        if self.authority.generations().issued_by(request.issuer) is None:
            return f"issuer {request.issuer.rfc4514_string()[:200]!r} is not this CA"
        return None

    def _get_cert(self, profile: Profile, request: GetCert) -> Outcome:
        """GetCert (RFC 8894 §3.3.4): a certificate of this profile, for its holder (or anyone: ``any``)."""
        issuer = self._require_our_issuer(request.issuer)
        serial = request.serial
        if not serial_storable(serial):
            raise BadCertId(f"serial {serial} is not a serial number this CA issues")
        stored = self.store.get_certificate(serial, issuer.issuer_name)
        if stored is None:
            raise BadCertId(f"no certificate with serial {serial:x}")
        if stored.profile != profile.name:
            raise BadCertId(f"certificate {serial:x} belongs to profile {stored.profile}, not {profile.name}")
        certificate = x509.load_der_x509_certificate(stored.der)
        if profile.get_cert is not GetCertScope.ANY and not self._holds(request, certificate, stored):
            raise BadCertId(f"certificate {serial:x} is not the GetCert signer's own")
        return self._success(request, [certificate], f"sent {stored.serial:x}")

    def _holds(self, request: GetCert, certificate: x509.Certificate, stored: CertificateRecord) -> bool:
        """Whether the GetCert signer holds ``certificate``: signs with its key, or with a valid certificate
        of ours for the same subject (a renewed device fetching an earlier certificate). A self-signed
        signer's subject proves nothing, so it only counts in a certificate we issued."""
        signer = request.context.signer
        if _signer_key_digest(request) == key_digest(certificate.public_key()):
            return True
        own = self._issued_by_us(signer.issuer_der, signer.serial, signer.der)
        return own is not None and _usable(own) and own.subject == stored.subject

    def _get_crl(self, request: GetCrl) -> Outcome:
        self._require_our_issuer(request.issuer)
        crl = self.crls.crl_der(request.issuer)
        if crl is None:
            raise BadCertId(f"no CRL of issuer {request.issuer.rfc4514_string()[:200]!r}")
        reply = message.cert_rep_success(
            request.context, _responder(request.context), cipher=request.cipher, key_transport=request.key_transport,
            crls=[crl],
        )
        return Outcome(reply, OperationStatus.SUCCESS, "CRL")

    def _require_our_issuer(self, issuer: x509.Name) -> CertificateAuthority:
        """The CA generation named ``issuer`` (GetCert, GetCRL: route by issuer)."""
        generation = self.authority.generations().issued_by(issuer)
        if generation is None:
            raise BadCertId(f"issuer {issuer.rfc4514_string()!r} is not this CA")
        return generation.ca

    def _success(self, request: PkiRequest, certificates: list[x509.Certificate], detail: str) -> Outcome:
        reply = message.cert_rep_success(
            request.context, _responder(request.context), cipher=request.cipher, key_transport=request.key_transport,
            certificates=certificates,
        )
        return Outcome(reply, OperationStatus.SUCCESS, detail)

    def _audit(self, profile: Profile, context: ReplyContext, status: str, detail: str | None, ip: str | None) -> None:
        try:
            self.store.record_operation(
                profile=profile.name, operation="PKIOperation", message_type=context.message_type,
                transaction_id=context.transaction_id, outcome=str(status), detail=detail, requester_ip=ip,
            )
        except StoreError as exc:
            log.error("audit record lost: %s (transaction=%s)", exc, context.transaction_id)


def _addressed_ra(generations: Generations, signed: SignedMessage) -> RaIdentity:
    """The RA the request's envelope is encrypted to: the issuing CA's current RA, one it replaced that is
    still in its grace period, or an RA of the CA a rollover replaced, for ``ca.ra_grace_days`` after the
    activation (a device that cached the old GetCACert). Not the staged CA's RA: it is announced, not in
    use. An envelope addressed to none of them is opened with the current RA, which refuses it the way it
    refuses any envelope it cannot open."""
    now = datetime.now(UTC)
    current = generations.active.ca.ra_keyring.current
    usable = [ra for generation in generations.decrypting(now) for ra in generation.ca.ra_keyring.identities()
              if ra.usable(now)]
    if len(usable) < 2:
        return current
    index = addressed_recipient(signed.content, [ra.cert for ra in usable])
    return usable[index] if index is not None else current


def _responder(context: ReplyContext) -> CertRepSigner:
    if context.responder is None:  # pki_operation always sets it
        raise TypeError("the reply context names no RA to sign the CertRep")
    return context.responder


def _pending(context: ReplyContext) -> bytes:
    return message.cert_rep_pending(context, _responder(context))


def _log_success(profile: Profile, request: CertificateRequest, certificate: x509.Certificate, ip: str | None) -> None:
    log.info(
        "PKIOperation SUCCESS profile=%s transaction=%s type=%s serial=%x ip=%s",
        profile.name, request.context.transaction_id, request.message_type.name, certificate.serial_number,
        ip,
    )


def _error_status(exc: Exception) -> str:
    """The audit outcome of an operation that ended in an exception (no CertRep): its type is open-ended."""
    return f"ERROR:{type(exc).__name__}"


def _usable(record: CertificateRecord | None) -> bool:
    """A certificate of ours that still vouches for its holder: stored, not revoked, not expired."""
    return record is not None and record.status is CertStatus.VALID and datetime.now(UTC) <= record.not_after


def _refuse_signer(request: PkiRequest, reason: str) -> NoReturn:
    """Answered exactly like an envelope that does not open: a stranger who re-signs a captured envelope
    learns nothing from the answer, not even that the ciphertext was intact."""
    log.warning("PKIOperation signer refused transaction=%s reason=%r", request.context.transaction_id, reason)
    raise EnvelopeRejected(reason)


def _signer_has_subject(signer_der: bytes, subject: x509.Name) -> bool:
    try:  # leniently, like the signer itself: Windows' throw-away certificates trip strict parsers
        signer_subject = asn1_x509.Certificate.load(signer_der).subject
        return bool(signer_subject.hashable == asn1_x509.Name.load(subject.public_bytes()).hashable)
    except (ValueError, TypeError):
        return False


def _signer_key_digest(request: PkiRequest) -> str | None:
    key = request.context.signer.public_key
    return None if key is None else key_digest(key)


def key_digest(key: PublicKeyTypes) -> str:
    """Hex SHA-256 of a public key's DER SubjectPublicKeyInfo."""
    return hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def name_digest(name: x509.Name) -> str:
    """Hex SHA-256 of a name's comparison form (RFC 5280 §7.1: case and space folded), the same however
    its strings are encoded: a CertPoll's subject matches its CSR's even if the client re-encodes it."""
    return hashlib.sha256(asn1_x509.Name.load(name.public_bytes()).hashable.encode("utf-8")).hexdigest()


def _type_name(value: int) -> str:
    try:
        return MessageType(value).name
    except ValueError:
        return str(value)

