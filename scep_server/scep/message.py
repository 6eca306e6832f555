"""Server side of a PKIOperation: decode a pkiMessage, encode the CertRep (RFC 8894 §3.2, §3.3).

Decoding happens in two steps so that every failure after the first can still be answered with a
signed CertRep FAILURE: :func:`read_envelope` yields the :class:`ReplyContext` (transactionID, sender
nonce, signer) or raises :class:`RequestError`; :func:`open_request` verifies, decrypts and parses the
content or raises a :class:`PKIFailure` carrying the failInfo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from ..errors import BadAlg, BadRequest, BadTime, FailInfo, RequestError
from . import cms
from .types import Attr, ContentCipher, DigestAlgorithm, KeyTransport, MessageType, PKIStatus

NONCE_SIZE = 16
MAX_TRANSACTION_ID = 128
MAX_SUBJECT_CHARS = 2048


class IssuerAndSubject(core.Sequence):  # type: ignore[misc]
    """CertPoll/GetCertInitial content (RFC 8894 §3.3.3)."""

    _fields = [("issuer", asn1_x509.Name), ("subject", asn1_x509.Name)]


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """What a profile accepts in the envelope."""

    allow_des: bool = False
    allow_sha1: bool = True
    max_clock_skew: timedelta = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class ReplyContext:
    """Everything a CertRep needs from the request, known before verification."""

    transaction_id: str
    sender_nonce: bytes
    message_type: int
    digest: DigestAlgorithm
    signer: cms.SignerCertificate


@dataclass(frozen=True, slots=True)
class IssuerSerial:
    issuer: x509.Name
    serial: int


@dataclass(frozen=True, slots=True)
class PkiRequest:
    """A verified, decrypted request and its parsed content."""

    context: ReplyContext
    message_type: MessageType
    cipher: ContentCipher
    key_transport: KeyTransport
    csr: x509.CertificateSigningRequest | None = None
    csr_der: bytes | None = None
    issuer_serial: IssuerSerial | None = None
    poll_subject: tuple[x509.Name, x509.Name] | None = None  # (issuer, subject)


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
    if not isinstance(message_type, str) or not message_type.isdigit() or len(message_type) > 3:
        raise RequestError("pkiMessage lacks a usable messageType")
    # A reply to a message with an unsupported digest is signed with SHA-256.
    digest = signed.digest or DigestAlgorithm.SHA256
    context = ReplyContext(transaction_id, nonce, int(message_type), digest, signed.signer)
    return signed, context


def open_request(
    signed: cms.SignedMessage,
    context: ReplyContext,
    *,
    ra_key: rsa.RSAPrivateKey,
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
    opened = cms.decrypt(signed.content, ra_key, ra_cert)
    if opened.cipher is ContentCipher.DES and not options.allow_des:
        raise BadAlg("single DES is disabled for this profile (allow_des)")
    request = PkiRequest(context, message_type, opened.cipher, opened.key_transport)
    return _with_content(request, opened.content)


def _known_message_type(value: int) -> MessageType:
    try:
        message_type = MessageType(value)
    except ValueError:
        raise BadRequest(f"messageType {value} is not supported") from None
    if message_type is MessageType.CERT_REP:
        raise BadRequest("CertRep is a response, not a request")
    return message_type


def _check_signing_time(signed: cms.SignedMessage, skew: timedelta, now: datetime) -> None:
    signing_time = signed.attribute(Attr.SIGNING_TIME, asn1_cms.Time)
    if isinstance(signing_time, datetime) and abs(signing_time - now) > skew:
        raise BadTime(f"signingTime {signing_time.isoformat()} is more than {skew} away from server time")


def _with_content(request: PkiRequest, content: bytes) -> PkiRequest:
    kind = request.message_type
    if kind in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
        return replace(request, csr=_load_csr(content), csr_der=content)
    if kind in (MessageType.GET_CERT, MessageType.GET_CRL):
        return replace(request, issuer_serial=_load_issuer_serial(content))
    return replace(request, poll_subject=_load_issuer_subject(content))


def _load_csr(der: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_der_x509_csr(der)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"the certification request is not a decodable PKCS#10: {str(exc)[:120]}") from exc
    try:
        csr.public_key()
    except Exception as exc:  # unsupported key algorithms surface as UnsupportedAlgorithm
        raise BadAlg(f"the certification request uses an unsupported key algorithm: {str(exc)[:120]}") from exc
    _check_csr_structure(csr)
    return csr


def _check_csr_structure(csr: x509.CertificateSigningRequest) -> None:
    """cryptography parses lazily: read everything now, so a malformed CSR is a BadRequest here and not
    an exception deep in issuance. Repeated attributes are refused: which one a validator reads and
    which one we issue from must not differ."""
    try:
        subject = csr.subject.rfc4514_string()
        list(csr.extensions)
        attributes = list(csr.attributes)
    except Exception as exc:  # DuplicateExtension, multi-valued attributes, undecodable extensions
        raise BadRequest(f"the certification request is malformed: {type(exc).__name__}: {str(exc)[:120]}") from exc
    if len(subject) > MAX_SUBJECT_CHARS:
        raise BadRequest(f"the subject is longer than {MAX_SUBJECT_CHARS} characters")
    oids = [attribute.oid for attribute in attributes]
    if len(oids) != len(set(oids)):
        raise BadRequest("the certification request repeats an attribute")


def _load_issuer_serial(der: bytes) -> IssuerSerial:
    try:
        parsed = asn1_cms.IssuerAndSerialNumber.load(der)
        return IssuerSerial(_name(parsed["issuer"]), int(parsed["serial_number"].native))
    except (ValueError, TypeError, KeyError) as exc:
        raise BadRequest(f"IssuerAndSerialNumber is not decodable: {str(exc)[:120]}") from exc


def _load_issuer_subject(der: bytes) -> tuple[x509.Name, x509.Name]:
    try:
        parsed = IssuerAndSubject.load(der)
        return _name(parsed["issuer"]), _name(parsed["subject"])
    except (ValueError, TypeError, KeyError) as exc:
        raise BadRequest(f"IssuerAndSubject is not decodable: {str(exc)[:120]}") from exc


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
class Responder:
    """The RA identity that signs CertReps."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey


def cert_rep_success(
    context: ReplyContext,
    responder: Responder,
    *,
    cipher: ContentCipher,
    key_transport: KeyTransport,
    certificates: list[x509.Certificate] | None = None,
    crls: list[bytes] | None = None,
) -> bytes:
    """CertRep SUCCESS: the certificates (or CRLs) in a degenerate PKCS#7, enveloped to the requester."""
    inner = cms.certs_only(certificates or [], crls or [])
    envelope = cms.encrypt(inner, context.signer, cipher, key_transport)
    return _cert_rep(context, responder, PKIStatus.SUCCESS, envelope, [])


def cert_rep_pending(context: ReplyContext, responder: Responder) -> bytes:
    """CertRep PENDING (RFC 8894 §3.3.2.2): the client should poll with CertPoll."""
    return _cert_rep(context, responder, PKIStatus.PENDING, b"", [])


def cert_rep_failure(context: ReplyContext, responder: Responder, fail_info: FailInfo, text: str | None) -> bytes:
    """CertRep FAILURE with failInfo (and failInfoText, RFC 8894 §3.2.1.4.5)."""
    extra = [cms.make_attribute(Attr.FAIL_INFO, core.PrintableString(str(int(fail_info))))]
    if text:
        extra.append(cms.make_attribute(Attr.FAIL_INFO_TEXT, core.UTF8String(text[:256])))
    return _cert_rep(context, responder, PKIStatus.FAILURE, b"", extra)


def _cert_rep(
    context: ReplyContext,
    responder: Responder,
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
