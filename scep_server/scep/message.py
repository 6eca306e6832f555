"""Server side of a PKIOperation: decode a pkiMessage, encode the CertRep (RFC 8894 §3.2, §3.3).

Decoding happens in two steps so that every failure after the first can still be answered with a
signed CertRep FAILURE: :func:`read_envelope` yields the :class:`ReplyContext` (transactionID, sender
nonce, signer) or raises :class:`RequestError`; :func:`open_request` verifies, decrypts and parses the
content or raises a :class:`PKIFailure` carrying the failInfo.

From the RSA step to the parsed content (PKCS#10, IssuerAndSerialNumber, IssuerAndSubject) there is
one code path and one failure, :class:`~.envelope.EnvelopeRejected`: the envelope is unauthenticated CBC,
and any difference in the answers would be a padding oracle on it.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import util as asn1_util
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_server.errors import BadAlg, BadRequest, BadTime, FailInfo, RequestError
from scep_server.pki.csr import csr_signature_valid
from scep_server.scep import cms
from scep_server.scep.envelope import (
    CmsDecrypter,
    Envelope,
    EnvelopeRejected,
    check_recipient,
    encrypt,
    parse_enveloped,
)
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, KeyTransport, MessageType, PKIStatus

log = logging.getLogger("scep_server.scep")

NONCE_SIZE = 16
MAX_TRANSACTION_ID = 128
MAX_SUBJECT_CHARS = 2048


class IssuerAndSubject(core.Sequence):  # type: ignore[misc]
    """CertPoll/GetCertInitial content (RFC 8894 §3.3.3)."""

    _fields = [("issuer", asn1_x509.Name), ("subject", asn1_x509.Name)]


class ContentKeyLedger:
    """Which ciphertext each wrapped content-encryption key came with: bounded, thread-safe, per process.

    Every query of an attack on a captured envelope (re-wrapped in the attacker's own SignedData) must
    reuse its encryptedKey, since only the RA can unwrap it, while a genuine client draws a fresh key for
    every envelope (RFC 5652 §6.3) and a retry resends the same bytes. So a wrapped key that comes back
    with other ciphertext is refused before the RSA step, with the same answer as any other envelope
    failure: a captured envelope gets at most one answer per worker process instead of an oracle. The
    oldest entries are forgotten beyond ``max_entries``.
    """

    def __init__(self, max_entries: int = 20_000) -> None:  # about 4 MB at most
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, envelope: Envelope) -> bool:
        """Whether ``envelope`` uses its wrapped key with the same ciphertext as before (or for the first time)."""
        key, used_with = envelope.binding()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None:
                self._seen[key] = used_with
                if len(self._seen) > self.max_entries:
                    self._seen.popitem(last=False)
                return True
            self._seen.move_to_end(key)
        return hmac.compare_digest(seen, used_with)


CONTENT_KEY_LEDGER = ContentKeyLedger()  # one per worker process, shared by its profiles


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """What a profile accepts in the envelope; ``key_ledger`` None: no check of wrapped-key reuse."""

    allow_des: bool = False
    allow_3des: bool = True
    allow_sha1: bool = True
    max_clock_skew: timedelta = timedelta(hours=24)
    key_ledger: ContentKeyLedger | None = None


@dataclass(frozen=True, slots=True)
class ReplyContext:
    """Everything a CertRep needs from the request, known before verification."""

    transaction_id: str
    sender_nonce: bytes
    message_type: int
    digest: DigestAlgorithm
    signer: cms.SignerCertificate
    # The RA the envelope is addressed to, which signs the CertRep (RFC 8894 §3.3.2): chosen by the
    # caller among its RAs (a rotated RA keeps answering for a while); None: the caller's current RA.
    responder: CertRepSigner | None = None


@dataclass(frozen=True, slots=True)
class _Opened:
    """A verified, decrypted envelope whose content is not read yet."""

    context: ReplyContext
    message_type: MessageType
    cipher: ContentCipher
    key_transport: KeyTransport


@dataclass(frozen=True, slots=True)
class _Request:
    """What every request carries: the reply context, and the algorithms its CertRep is enveloped with."""

    context: ReplyContext
    cipher: ContentCipher
    key_transport: KeyTransport


@dataclass(frozen=True, slots=True)
class CertificateRequest(_Request):
    """PKCSReq or RenewalReq (RFC 8894 §3.3.1): a PKCS#10 request, read completely and self-signed."""

    csr: x509.CertificateSigningRequest
    csr_der: bytes
    renewal: bool

    @property
    def message_type(self) -> MessageType:
        return MessageType.RENEWAL_REQ if self.renewal else MessageType.PKCS_REQ


@dataclass(frozen=True, slots=True)
class CertPoll(_Request):
    """CertPoll, GetCertInitial in older drafts (RFC 8894 §3.3.3): the issuer and subject of a pending request."""

    issuer: x509.Name
    subject: x509.Name
    message_type: ClassVar[MessageType] = MessageType.CERT_POLL


@dataclass(frozen=True, slots=True)
class GetCert(_Request):
    """GetCert (RFC 8894 §3.3.4): the certificate ``serial`` of ``issuer``."""

    issuer: x509.Name
    serial: int
    message_type: ClassVar[MessageType] = MessageType.GET_CERT


@dataclass(frozen=True, slots=True)
class GetCrl(_Request):
    """GetCRL (RFC 8894 §3.3.4): the CRL covering the certificate ``serial`` of ``issuer``."""

    issuer: x509.Name
    serial: int
    message_type: ClassVar[MessageType] = MessageType.GET_CRL


PkiRequest = CertificateRequest | CertPoll | GetCert | GetCrl  # a verified, decrypted and parsed request


def read_envelope(der: bytes) -> tuple[cms.SignedMessage, ReplyContext]:
    """Parse the outer SignedData and the SCEP attributes; RequestError when no CertRep is possible."""
    signed = cms.parse_signed(der)
    transaction_id = signed.attribute(Attr.TRANSACTION_ID, core.PrintableString)
    nonce = signed.attribute(Attr.SENDER_NONCE, core.OctetString)
    message_type = signed.attribute(Attr.MESSAGE_TYPE, core.PrintableString)
    if not isinstance(transaction_id, str) or not 0 < len(transaction_id) <= MAX_TRANSACTION_ID:
        raise RequestError("pkiMessage lacks a usable transactionID")
    if not isinstance(nonce, bytes) or not 8 <= len(nonce) <= 64:
        raise RequestError("pkiMessage lacks a usable senderNonce")
    if not isinstance(message_type, str) or not _is_ascii_number(message_type, 3):
        raise RequestError("pkiMessage lacks a usable messageType")
    # A reply to a message with an unsupported digest is signed with SHA-256.
    digest = signed.digest or DigestAlgorithm.SHA256
    context = ReplyContext(transaction_id, nonce, int(message_type), digest, signed.signer)
    return signed, context


def open_request(
    signed: cms.SignedMessage,
    context: ReplyContext,
    *,
    ra_key: CmsDecrypter,
    ra_cert: x509.Certificate,
    options: DecodeOptions,
    now: datetime | None = None,
) -> PkiRequest:
    """Verify, check policy, decrypt and parse; raises a PKIFailure subclass on every problem."""
    message_type = _known_message_type(context.message_type)
    if signed.digest is DigestAlgorithm.SHA1 and not options.allow_sha1:
        raise BadAlg("SHA-1 message digests are disabled for this profile")
    signed.verify()
    _check_signing_time(signed, options.max_clock_skew, now or datetime.now(UTC))
    if not isinstance(context.signer.public_key, rsa.RSAPublicKey):
        raise BadAlg("the signer key is not RSA: the reply cannot be encrypted to it")
    if signed.content is None:
        raise BadRequest("pkiMessage carries no pkcsPKIEnvelope")
    try:
        request = _open_envelope(signed.content, context, message_type, ra_key, ra_cert, options)
    except EnvelopeRejected as rejected:
        log.warning(
            "PKIOperation envelope rejected transaction=%s type=%s reason=%r",
            context.transaction_id, message_type.name, rejected.reason,
        )
        raise
    _check_csr_digest(request, options)
    return request


def _open_envelope(
    der: bytes,
    context: ReplyContext,
    message_type: MessageType,
    ra_key: CmsDecrypter,
    ra_cert: x509.Certificate,
    options: DecodeOptions,
) -> PkiRequest:
    """Algorithms are refused before decrypting; from the RSA step on, every failure is one EnvelopeRejected
    raised at one place after the whole path (unwrap, decrypt, unpad, parse) has run."""
    envelope = parse_enveloped(der, ra_cert)
    _check_cipher(envelope.cipher, options)
    if options.key_ledger is not None and not options.key_ledger.admit(envelope):
        raise EnvelopeRejected("the wrapped content key was already used with another ciphertext")
    decrypted = envelope.open(ra_key)
    opened = _Opened(context, message_type, decrypted.cipher, decrypted.key_transport)
    request, parse_problem = _read_content(opened, decrypted.content)
    problem = decrypted.problem or parse_problem
    if problem is not None or request is None:
        raise EnvelopeRejected(problem or "the content was not read")
    return request


def _check_cipher(cipher: ContentCipher, options: DecodeOptions) -> None:
    if cipher is ContentCipher.DES and not options.allow_des:
        raise BadAlg("single DES is disabled for this profile (allow_des)")
    if cipher is ContentCipher.DES3 and not options.allow_3des:
        raise BadAlg("3DES is disabled for this profile (allow_3des)")


def _check_csr_digest(request: PkiRequest, options: DecodeOptions) -> None:
    """A SHA-1-signed CSR only where the profile allows SHA-1 (its CSR signature was verified already)."""
    if not isinstance(request, CertificateRequest) or options.allow_sha1:
        return
    try:
        algorithm = request.csr.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return  # refused by the issuance policy, which names the algorithm
    if isinstance(algorithm, hashes.SHA1):
        raise BadAlg("SHA-1-signed certification requests are disabled for this profile (allow_sha1)")


def _known_message_type(value: int) -> MessageType:
    try:
        message_type = MessageType(value)
    except ValueError:
        raise BadRequest(f"messageType {value} is not supported") from None
    if message_type is MessageType.CERT_REP:
        raise BadRequest("CertRep is a response, not a request")
    return message_type


def _is_ascii_number(text: str, max_digits: int) -> bool:
    """Only ASCII digits: str.isdigit() also accepts Unicode digits such as '²', which int() refuses."""
    return 0 < len(text) <= max_digits and all("0" <= char <= "9" for char in text)


def _check_signing_time(signed: cms.SignedMessage, skew: timedelta, now: datetime) -> None:
    signing_time = signed.attribute(Attr.SIGNING_TIME, asn1_cms.Time)
    if isinstance(signing_time, asn1_util.extended_datetime):  # year 0: no datetime can hold it
        raise BadTime("signingTime lies in the year 0")
    if isinstance(signing_time, datetime) and signing_time.tzinfo is None:
        # A GeneralizedTime without a zone; RFC 5280 §4.1.2.5.2 requires Zulu, so read it as UTC.
        signing_time = signing_time.replace(tzinfo=UTC)
    if isinstance(signing_time, datetime) and abs(signing_time - now) > skew:
        raise BadTime(f"signingTime {signing_time.isoformat()} is more than {skew} away from server time")


def _read_content(opened: _Opened, content: bytes) -> tuple[PkiRequest | None, str | None]:
    """Parse the content for the message type; never raises: (request, None) or (None, what failed).

    Also run on content whose padding was bad, so that bad padding and bad content take the same path.
    """
    try:
        return _with_content(opened, content), None
    except Exception as exc:  # every way the content can be unreadable gets the same answer
        return None, f"{opened.message_type.name} content: {type(exc).__name__}: {_short(exc)}"


def _with_content(opened: _Opened, content: bytes) -> PkiRequest:
    head = (opened.context, opened.cipher, opened.key_transport)
    match opened.message_type:
        case MessageType.PKCS_REQ | MessageType.RENEWAL_REQ:
            renewal = opened.message_type is MessageType.RENEWAL_REQ
            return CertificateRequest(*head, csr=_load_csr(content), csr_der=content, renewal=renewal)
        case MessageType.GET_CERT:
            return GetCert(*head, *_load_issuer_serial(content))
        case MessageType.GET_CRL:
            return GetCrl(*head, *_load_issuer_serial(content))
        case _:
            return CertPoll(*head, *_load_issuer_subject(content))


def _load_csr(der: bytes) -> x509.CertificateSigningRequest:
    """A PKCS#10 request (RFC 2986) read completely and signed by its own key; ValueError otherwise.

    The proof-of-possession signature is checked here, inside the one failure, because a block garbled
    by CBC tampering can sit in the signature bits and still parse.
    """
    csr = x509.load_der_x509_csr(der)  # also InvalidVersion, UnsupportedAlgorithm
    csr.public_key()
    _check_csr_structure(csr)
    if not csr_signature_valid(csr):
        raise ValueError("the certification request signature does not verify")
    return csr


def _check_csr_structure(csr: x509.CertificateSigningRequest) -> None:
    """cryptography parses lazily: read everything now, so a malformed CSR fails here and not deep in
    issuance. Repeated attributes are refused: which one a validator reads and which one we issue from
    must not differ."""
    subject = csr.subject.rfc4514_string()
    list(csr.extensions)  # DuplicateExtension, undecodable extensions
    attributes = list(csr.attributes)  # multi-valued attributes
    if len(subject) > MAX_SUBJECT_CHARS:
        raise ValueError(f"the subject is longer than {MAX_SUBJECT_CHARS} characters")
    oids = [attribute.oid for attribute in attributes]
    if len(oids) != len(set(oids)):
        raise ValueError("the certification request repeats an attribute")


def _load_issuer_serial(der: bytes) -> tuple[x509.Name, int]:
    parsed = asn1_cms.IssuerAndSerialNumber.load(der, strict=True)
    return _name(parsed["issuer"]), int(parsed["serial_number"].native)


def _load_issuer_subject(der: bytes) -> tuple[x509.Name, x509.Name]:
    parsed = IssuerAndSubject.load(der, strict=True)
    return _name(parsed["issuer"]), _name(parsed["subject"])


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def _name(name: asn1_x509.Name) -> x509.Name:
    """An asn1crypto Name as a cryptography Name (cryptography has no DER loader for a bare Name)."""
    rdns = []
    for rdn in name.chosen:
        attributes = [
            x509.NameAttribute(x509.ObjectIdentifier(ava["type"].dotted), str(ava["value"].native)) for ava in rdn
        ]
        rdns.append(x509.RelativeDistinguishedName(attributes))
    return x509.Name(rdns)


@dataclass(frozen=True, slots=True)
class CertRepSigner:
    """The RA identity that signs CertReps (RFC 8894 §3.3.2)."""

    cert: x509.Certificate
    key: cms.CmsSigner


def cert_rep_success(
    context: ReplyContext,
    responder: CertRepSigner,
    *,
    cipher: ContentCipher,
    key_transport: KeyTransport,
    certificates: list[x509.Certificate] | None = None,
    crls: list[bytes] | None = None,
) -> bytes:
    """CertRep SUCCESS: the certificates (or CRLs) in a degenerate PKCS#7, enveloped to the requester."""
    inner = cms.certs_only(certificates or [], crls or [])
    envelope = encrypt(inner, context.signer, cipher, key_transport)
    return _cert_rep(context, responder, PKIStatus.SUCCESS, envelope, [])


def check_success_reply(context: ReplyContext, cipher: ContentCipher, key_transport: KeyTransport) -> None:
    """``BadAlg`` when no CertRep SUCCESS could be enveloped to the requester as it asked."""
    check_recipient(context.signer, cipher, key_transport)


def cert_rep_pending(context: ReplyContext, responder: CertRepSigner) -> bytes:
    """CertRep PENDING (RFC 8894 §3.3.2.2): the client should poll with CertPoll."""
    return _cert_rep(context, responder, PKIStatus.PENDING, b"", [])


def cert_rep_failure(context: ReplyContext, responder: CertRepSigner, fail_info: FailInfo, text: str | None) -> bytes:
    """CertRep FAILURE with failInfo (and failInfoText, RFC 8894 §3.2.1.4.5)."""
    extra = [cms.make_attribute(Attr.FAIL_INFO, core.PrintableString(str(int(fail_info))))]
    if text:
        extra.append(cms.make_attribute(Attr.FAIL_INFO_TEXT, core.UTF8String(text[:256])))
    return _cert_rep(context, responder, PKIStatus.FAILURE, b"", extra)


def _cert_rep(
    context: ReplyContext,
    responder: CertRepSigner,
    status: PKIStatus,
    envelope: bytes | None,
    extra: list[asn1_cms.CMSAttribute],
) -> bytes:
    attributes = [
        cms.make_attribute(Attr.MESSAGE_TYPE, core.PrintableString(str(int(MessageType.CERT_REP)))),
        cms.make_attribute(Attr.PKI_STATUS, core.PrintableString(status.value)),
        cms.make_attribute(Attr.TRANSACTION_ID, core.PrintableString(context.transaction_id)),
        cms.make_attribute(Attr.RECIPIENT_NONCE, core.OctetString(context.sender_nonce)),
        cms.make_attribute(Attr.SENDER_NONCE, core.OctetString(os.urandom(NONCE_SIZE))),
        *extra,
    ]
    return cms.sign(
        envelope, signer_cert=responder.cert, signer_key=responder.key, digest=context.digest, attributes=attributes
    )
