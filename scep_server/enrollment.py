"""One PKIOperation from bytes in to CertRep out: decode → challenge → issue → store → encode.

Invariants this module keeps:
- no certificate is issued unless the profile's validator accepted the request (PKCSReq) or the request
  is signed by a valid certificate this CA issued (RenewalReq);
- a certificate leaves the server only after it is stored;
- one transactionID yields at most one certificate: a retry with the same CSR gets the same one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from cryptography import x509

from .ca.authority import CertificateAuthority
from .ca.issue import describe_sans
from .challenge import ValidationRequest
from .errors import (
    BadCertId,
    BadRequest,
    FailInfo,
    PKIFailure,
    StoreError,
    failure_for,
)
from .issuance import Deferred, IssuanceService, Profile
from .revocation import CrlCache
from .scep import message
from .scep.message import PkiRequest, ReplyContext, Responder
from .scep.types import MessageType
from .store import CertificateRecord, CertStatus, Store, TransactionRecord, TransactionState

log = logging.getLogger("scep_server.scep")

MAX_IP_CHARS = 64  # the store's column; X-Forwarded-For chains can be longer


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one PKIOperation (for the audit log and metrics)."""

    reply: bytes
    status: str
    detail: str | None = None
    message_type: str = "unknown"
    issued: bool = False


class EnrollmentService:
    """Answers PKIOperation messages for every profile of one CA."""

    def __init__(
        self, ca: CertificateAuthority, store: Store, profiles: Mapping[str, Profile], crls: CrlCache
    ) -> None:
        self.ca = ca
        self.store = store
        self.profiles = profiles
        self.crls = crls
        self.issuance = IssuanceService(ca, store, crls)
        self.responder = Responder(ca.ra_cert, ca.ra_key)

    def pki_operation(self, profile: Profile, der: bytes, requester_ip: str | None) -> Outcome:
        """Answer one pkiMessage. RequestError escapes when no CertRep can be built."""
        ip = requester_ip[:MAX_IP_CHARS] if requester_ip else None
        signed, context = message.read_envelope(der)
        try:
            request = message.open_request(
                signed, context, ra_key=self.ca.ra_key, ra_cert=self.ca.ra_cert, options=profile.decode
            )
            outcome = self._dispatch(profile, request, ip)
        except PKIFailure as failure:
            outcome = self._failure(profile, context, failure, ip)
        except Exception as exc:  # 503s and the unexpected: still one audit record
            self._audit(profile, context, Outcome(b"", f"ERROR:{type(exc).__name__}", str(exc)[:200]), ip)
            raise
        self._audit(profile, context, outcome, ip)
        return replace(outcome, message_type=_type_name(context.message_type))

    def _dispatch(self, profile: Profile, request: PkiRequest, ip: str | None) -> Outcome:
        kind = request.message_type
        if kind in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
            return self._enroll(profile, request, ip)
        if kind is MessageType.CERT_POLL:
            return self._poll(profile, request)
        if kind is MessageType.GET_CERT:
            return self._get_cert(request)
        return self._get_crl(request)

    def _failure(self, profile: Profile, context: ReplyContext, failure: PKIFailure, ip: str | None) -> Outcome:
        log.warning(
            "PKIOperation FAILURE profile=%s transaction=%s type=%s failInfo=%s ip=%s reason=%r",
            profile.name, context.transaction_id, _type_name(context.message_type),
            failure.fail_info.name, ip, failure.detail,
        )
        reply = message.cert_rep_failure(context, self.responder, failure.fail_info, failure.detail)
        return Outcome(reply, f"FAILURE:{failure.fail_info.name}", failure.detail)

    # PKCSReq / RenewalReq ------------------------------------------------------------------------

    def _enroll(self, profile: Profile, request: PkiRequest, ip: str | None) -> Outcome:
        assert request.csr is not None and request.csr_der is not None
        context = request.context
        renewal = request.message_type is MessageType.RENEWAL_REQ
        if renewal:
            self._check_renewal_signer(profile, request)
        record, claimed = self.store.claim_transaction(
            profile=profile.name, transaction_id=context.transaction_id,
            message_type=int(request.message_type), csr_der=request.csr_der, requester_ip=ip,
        )
        if not claimed:
            return self._replay(request, record)
        validation = ValidationRequest(profile.name, context.transaction_id, request.csr, request.csr_der, ip)
        result = self.issuance.process(profile, validation, renewal=renewal)
        if isinstance(result, Deferred):
            return Outcome(message.cert_rep_pending(context, self.responder), "PENDING", result.reason)
        log.info(
            "PKIOperation SUCCESS profile=%s transaction=%s type=%s serial=%x ip=%s",
            profile.name, context.transaction_id, request.message_type.name, result.serial_number, ip,
        )
        return replace(self._success(request, [result], f"issued {result.serial_number:x}"), issued=True)

    def _replay(self, request: PkiRequest, record: TransactionRecord) -> Outcome:
        """A transactionID we have seen: same request → same answer; a different request → refused."""
        assert request.csr_der is not None
        if record.csr_sha256 != hashlib.sha256(request.csr_der).hexdigest():
            raise BadRequest("this transactionID was already used for a different certification request")
        return self._transaction_state(request, record)

    def _transaction_state(self, request: PkiRequest, record: TransactionRecord) -> Outcome:
        if record.state is TransactionState.ISSUED and record.serial is not None:
            stored = self._stored_certificate(record.serial)
            return self._success(request, [stored], f"re-sent {record.serial:x}")
        if record.state is TransactionState.PENDING:
            return Outcome(message.cert_rep_pending(request.context, self.responder), "PENDING")
        raise failure_for(FailInfo(record.fail_info or FailInfo.BAD_REQUEST), record.fail_reason or "request failed")

    def _stored_certificate(self, serial: int) -> x509.Certificate:
        stored = self.store.get_certificate(serial, self.ca.issuer_name)
        if stored is None:
            raise StoreError(f"transaction names certificate {serial:x}, which is not in the store")
        return x509.load_der_x509_certificate(stored.der)

    def _check_renewal_signer(self, profile: Profile, request: PkiRequest) -> None:
        """RenewalReq must be signed by an unexpired, unrevoked certificate this CA issued for this profile
        (RFC 8894 §3.3.1.2), and may only renew that identity: same subject, SANs and EKUs."""
        if not profile.allow_renewal:
            raise BadRequest(f"renewal is disabled for profile {profile.name}")
        signer = request.context.signer
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
        assert request.csr is not None
        forced_eku = profile.policy.extended_key_usage is not None
        _require_same_identity(request.csr, x509.load_der_x509_certificate(record.der), compare_eku=not forced_eku)

    def _issued_by_us(self, issuer_der: bytes, serial: int, der: bytes) -> CertificateRecord | None:
        if issuer_der != self.ca.ca_cert.subject.public_bytes():
            return None
        record = self.store.get_certificate(serial, self.ca.issuer_name)
        return record if record is not None and record.der == der else None

    # CertPoll / GetCert / GetCRL ------------------------------------------------------------------

    def _poll(self, profile: Profile, request: PkiRequest) -> Outcome:
        record = self.store.get_transaction(profile.name, request.context.transaction_id)
        if record is None:
            raise BadCertId(f"no transaction {request.context.transaction_id!r} in profile {profile.name}")
        return self._transaction_state(request, record)

    def _get_cert(self, request: PkiRequest) -> Outcome:
        assert request.issuer_serial is not None
        self._require_our_issuer(request.issuer_serial.issuer)
        stored = self.store.get_certificate(request.issuer_serial.serial, self.ca.issuer_name)
        if stored is None:
            raise BadCertId(f"no certificate with serial {request.issuer_serial.serial:x}")
        return self._success(request, [x509.load_der_x509_certificate(stored.der)], f"sent {stored.serial:x}")

    def _get_crl(self, request: PkiRequest) -> Outcome:
        assert request.issuer_serial is not None
        self._require_our_issuer(request.issuer_serial.issuer)
        reply = message.cert_rep_success(
            request.context, self.responder, cipher=request.cipher, key_transport=request.key_transport,
            crls=[self.crls.current_der()],
        )
        return Outcome(reply, "SUCCESS", "CRL")

    def _require_our_issuer(self, issuer: x509.Name) -> None:
        if issuer.rfc4514_string() != self.ca.issuer_name:
            raise BadCertId(f"issuer {issuer.rfc4514_string()!r} is not this CA")

    def _success(self, request: PkiRequest, certificates: list[x509.Certificate], detail: str) -> Outcome:
        reply = message.cert_rep_success(
            request.context, self.responder, cipher=request.cipher, key_transport=request.key_transport,
            certificates=certificates,
        )
        return Outcome(reply, "SUCCESS", detail)

    def _audit(self, profile: Profile, context: ReplyContext, outcome: Outcome, ip: str | None) -> None:
        try:
            self.store.record_operation(
                profile=profile.name, operation="PKIOperation", message_type=context.message_type,
                transaction_id=context.transaction_id, outcome=outcome.status, detail=outcome.detail,
                requester_ip=ip,
            )
        except StoreError as exc:
            log.error("audit record lost: %s (transaction=%s)", exc, context.transaction_id)


def _require_same_identity(
    csr: x509.CertificateSigningRequest, current: x509.Certificate, *, compare_eku: bool
) -> None:
    """A renewal keeps the identity it renews; anything else needs a fresh, validated enrollment."""
    if csr.subject != current.subject:
        raise BadRequest("a renewal must keep the subject of the certificate it renews")
    if set(describe_sans(csr)) != set(describe_sans(current)):
        raise BadRequest("a renewal must keep the subjectAltNames of the certificate it renews")
    if compare_eku and _ekus(csr) != _ekus(current):
        raise BadRequest("a renewal must keep the extended key usages of the certificate it renews")


def _ekus(obj: x509.Certificate | x509.CertificateSigningRequest) -> frozenset[str] | None:
    try:
        usages = obj.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return frozenset(oid.dotted_string for oid in usages)


def _type_name(value: int) -> str:
    try:
        return MessageType(value).name
    except ValueError:
        return str(value)

