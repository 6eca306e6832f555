"""Client side of SCEP (RFC 8894): build pkiMessages, read CertReps and GetCACert/GetCACaps replies.

Pure functions over bytes and x509 objects; the HTTP transport lives in :mod:`scep_server.simulator.http`. Every
CMS operation goes through :mod:`.cms`. A request is enveloped to the CA or RA certificate, then
signed by the client's signer (RFC 8894 §3.1); the CertRep is checked the way strict clients do:
trusted signer, valid signature, same transactionID, recipientNonce = our senderNonce (§3.2.1.5).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import AttributeOID

from scep_server.errors import ScepError, ScepServerError
from scep_server.scep import cms
from scep_server.scep.message import IssuerAndSubject
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, FailInfo, KeyTransport, MessageType, PKIStatus

__all__ = [
    "BuiltRequest",
    "CertRep",
    "ScepClientError",
    "build_cert_poll",
    "build_csr",
    "build_get_cert",
    "build_get_crl",
    "build_pki_request",
    "build_pkcsreq",
    "choose_algorithms",
    "parse_caps",
    "parse_cert_rep",
    "parse_get_ca_cert",
    "pick_recipient",
    "self_signed_signer",
    "transaction_id_for",
]

NONCE_SIZE = 16
CA_CERT = "application/x-x509-ca-cert"
CA_RA_CERT = "application/x-x509-ca-ra-cert"

# RFC 8894 Table 7, in the case a CA must use; clients compare case-insensitively (§3.5.2).
KNOWN_CAPS = (
    "AES",
    "DES3",
    "GetNextCACert",
    "POSTPKIOperation",
    "Renewal",
    "SHA-1",
    "SHA-256",
    "SHA-512",
    "SCEPStandard",
)
_T = TypeVar("_T")
_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]+")


class ScepClientError(ScepServerError):
    """A SCEP reply cannot be accepted: malformed, untrusted, or not an answer to our request."""


@dataclass(frozen=True, slots=True)
class BuiltRequest:
    """A signed pkiMessage ready to send, and what its CertRep must echo."""

    der: bytes
    transaction_id: str
    sender_nonce: bytes
    message_type: MessageType


@dataclass(frozen=True, slots=True)
class CertRep:
    """A verified CertRep (RFC 8894 §3.3.2); certificates and CRLs only on SUCCESS."""

    status: PKIStatus
    fail_info: FailInfo | None
    fail_info_text: str | None
    transaction_id: str
    sender_nonce: bytes | None
    recipient_nonce: bytes | None
    certificates: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]
    content_cipher: ContentCipher | None
    digest: DigestAlgorithm

    def certificate_for(self, public_key: PublicKeyTypes) -> x509.Certificate:
        """The returned certificate that certifies ``public_key`` (the issued one, whatever the order)."""
        wanted = _spki(public_key)
        for cert in self.certificates:
            if _spki(cert.public_key()) == wanted:
                return cert
        raise ScepClientError("the CertRep holds no certificate for the requested public key")


# --- building requests -------------------------------------------------------------------------------


def transaction_id_for(public_key: PublicKeyTypes) -> str:
    """Upper-case hex SHA-1 of the DER SubjectPublicKeyInfo, as Apple's clients compute it."""
    return hashlib.sha1(_spki(public_key)).hexdigest().upper()


def self_signed_signer(key: rsa.RSAPrivateKey, subject: x509.Name, *, days: int = 1) -> x509.Certificate:
    """The throw-away self-signed certificate that signs a PKCSReq (RFC 8894 §2.3).

    keyEncipherment is set because the CertRep is enveloped to this certificate. notBefore is
    backdated an hour so that a CA whose clock is slightly behind still accepts it.
    """
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def build_csr(
    key: rsa.RSAPrivateKey, subject: x509.Name, *, challenge_password: str | None = None
) -> x509.CertificateSigningRequest:
    """A PKCS#10 request, with a challengePassword attribute when given (RFC 8894 §3.3.1)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if challenge_password is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge_password.encode())
    return builder.sign(key, hashes.SHA256())


def build_pki_request(
    message_type: MessageType,
    content: bytes,
    *,
    signer_cert: x509.Certificate,
    signer_key: rsa.RSAPrivateKey,
    recipient: x509.Certificate,
    cipher: ContentCipher = ContentCipher.AES128,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    transaction_id: str,
    sender_nonce: bytes | None = None,
    key_transport: KeyTransport = KeyTransport.RSA_PKCS1V15,
) -> BuiltRequest:
    """Envelope ``content`` to ``recipient`` and sign it with the SCEP attributes (RFC 8894 §3.2).

    ``key_transport`` wraps the content key: RSAES-PKCS1-v1_5 as most clients do, or RSAES-OAEP with
    the hashes it names (RFC 8017 §A.2.1); the CA answers with the same.
    """
    if message_type is MessageType.CERT_REP:
        raise ValueError("a client does not send CertRep")
    if not _PRINTABLE.fullmatch(transaction_id):
        raise ValueError("transaction_id must be a non-empty PrintableString")
    nonce = os.urandom(NONCE_SIZE) if sender_nonce is None else sender_nonce
    if not nonce:
        raise ValueError("sender_nonce must not be empty")
    try:
        envelope = cms.encrypt(content, recipient, cipher, key_transport)
    except ScepError as exc:
        raise ValueError(f"cannot envelope to the recipient: {exc}") from exc
    attributes = [
        cms.make_attribute(Attr.MESSAGE_TYPE, core.PrintableString(str(int(message_type)))),
        cms.make_attribute(Attr.TRANSACTION_ID, core.PrintableString(transaction_id)),
        cms.make_attribute(Attr.SENDER_NONCE, core.OctetString(nonce)),
    ]
    der = cms.sign(envelope, signer_cert=signer_cert, signer_key=signer_key, digest=digest, attributes=attributes)
    return BuiltRequest(der=der, transaction_id=transaction_id, sender_nonce=nonce, message_type=message_type)


def build_pkcsreq(
    csr: x509.CertificateSigningRequest,
    *,
    signer_cert: x509.Certificate,
    signer_key: rsa.RSAPrivateKey,
    recipient: x509.Certificate,
    cipher: ContentCipher = ContentCipher.AES128,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    transaction_id: str | None = None,
    renewal: bool = False,
    key_transport: KeyTransport = KeyTransport.RSA_PKCS1V15,
) -> BuiltRequest:
    """PKCSReq, or RenewalReq signed with the current certificate (RFC 8894 §3.3.1).

    The transactionID defaults to :func:`transaction_id_for` the CSR's key, so a retry of the same
    request keeps its transaction.
    """
    return build_pki_request(
        MessageType.RENEWAL_REQ if renewal else MessageType.PKCS_REQ,
        csr.public_bytes(serialization.Encoding.DER),
        signer_cert=signer_cert,
        signer_key=signer_key,
        recipient=recipient,
        cipher=cipher,
        digest=digest,
        transaction_id=transaction_id or transaction_id_for(csr.public_key()),
        key_transport=key_transport,
    )


def build_cert_poll(
    issuer: x509.Name,
    subject: x509.Name,
    *,
    transaction_id: str,
    signer_cert: x509.Certificate,
    signer_key: rsa.RSAPrivateKey,
    recipient: x509.Certificate,
    cipher: ContentCipher = ContentCipher.AES128,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256,
) -> BuiltRequest:
    """CertPoll for a PENDING request: same transactionID as the PKCSReq (RFC 8894 §3.3.3, §4.4)."""
    content = IssuerAndSubject({"issuer": _asn1_name(issuer), "subject": _asn1_name(subject)}).dump()
    return build_pki_request(
        MessageType.CERT_POLL,
        content,
        signer_cert=signer_cert,
        signer_key=signer_key,
        recipient=recipient,
        cipher=cipher,
        digest=digest,
        transaction_id=transaction_id,
    )


def build_get_cert(
    issuer: x509.Name,
    serial: int,
    *,
    signer_cert: x509.Certificate,
    signer_key: rsa.RSAPrivateKey,
    recipient: x509.Certificate,
    cipher: ContentCipher = ContentCipher.AES128,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    transaction_id: str | None = None,
) -> BuiltRequest:
    """GetCert for the certificate ``issuer``/``serial`` (RFC 8894 §3.3.4)."""
    return _build_issuer_serial(
        MessageType.GET_CERT, issuer, serial, signer_cert, signer_key, recipient, cipher, digest, transaction_id
    )


def build_get_crl(
    issuer: x509.Name,
    serial: int,
    *,
    signer_cert: x509.Certificate,
    signer_key: rsa.RSAPrivateKey,
    recipient: x509.Certificate,
    cipher: ContentCipher = ContentCipher.AES128,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    transaction_id: str | None = None,
) -> BuiltRequest:
    """GetCRL for the CRL covering ``issuer``/``serial`` (RFC 8894 §3.3.4)."""
    return _build_issuer_serial(
        MessageType.GET_CRL, issuer, serial, signer_cert, signer_key, recipient, cipher, digest, transaction_id
    )


def _build_issuer_serial(
    message_type: MessageType,
    issuer: x509.Name,
    serial: int,
    signer_cert: x509.Certificate,
    signer_key: rsa.RSAPrivateKey,
    recipient: x509.Certificate,
    cipher: ContentCipher,
    digest: DigestAlgorithm,
    transaction_id: str | None,
) -> BuiltRequest:
    content = asn1_cms.IssuerAndSerialNumber({"issuer": _asn1_name(issuer), "serial_number": serial}).dump()
    return build_pki_request(
        message_type,
        content,
        signer_cert=signer_cert,
        signer_key=signer_key,
        recipient=recipient,
        cipher=cipher,
        digest=digest,
        transaction_id=transaction_id or os.urandom(16).hex().upper(),
    )


def _asn1_name(name: x509.Name) -> asn1_x509.Name:
    return asn1_x509.Name.load(name.public_bytes())


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- reading CertRep ---------------------------------------------------------------------------------


def parse_cert_rep(
    der: bytes,
    *,
    request: BuiltRequest,
    signer_key: rsa.RSAPrivateKey,
    signer_cert: x509.Certificate,
    trusted_signers: Sequence[x509.Certificate],
) -> CertRep:
    """Verify a CertRep against ``request`` and, on SUCCESS, open its envelope (RFC 8894 §3.3.2).

    ``signer_key``/``signer_cert`` are the request's signer, to which the CA envelopes its reply.
    FAILURE and PENDING are returned, not raised: they are answers. Anything that is not a genuine
    answer to ``request`` raises :class:`ScepClientError`.
    """
    message = _verified(der, trusted_signers)
    _check_correlation(message, request)
    status = _status(message)
    fail_info, fail_info_text = _failure(message) if status is PKIStatus.FAILURE else (None, None)
    certificates: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    cipher = None
    if status is PKIStatus.SUCCESS:
        cipher, certificates, crls = _open_success(message, request, signer_key, signer_cert)
    return CertRep(
        status=status,
        fail_info=fail_info,
        fail_info_text=fail_info_text,
        transaction_id=request.transaction_id,
        sender_nonce=_attribute(message, Attr.SENDER_NONCE, core.OctetString, bytes),
        recipient_nonce=_attribute(message, Attr.RECIPIENT_NONCE, core.OctetString, bytes),
        certificates=certificates,
        crls=crls,
        content_cipher=cipher,
        digest=_digest_of(message),
    )


def _verified(der: bytes, trusted_signers: Sequence[x509.Certificate]) -> cms.SignedMessage:
    try:
        message = cms.parse_signed(der)
    except ScepError as exc:
        raise ScepClientError(f"CertRep is not a SCEP pkiMessage: {exc}") from exc
    if not _is_trusted(message.signer, trusted_signers):
        raise ScepClientError("CertRep is signed by a certificate that is not one of the CA/RA certificates")
    try:
        message.verify()
    except ScepError as exc:
        raise ScepClientError(f"CertRep signature is invalid: {exc}") from exc
    return message


def _digest_of(message: cms.SignedMessage) -> DigestAlgorithm:
    if message.digest is None:  # verify() has already refused it; kept for the type checker
        raise ScepClientError("CertRep digest algorithm is not supported")
    return message.digest


def _is_trusted(signer: cms.SignerCertificate, trusted: Sequence[x509.Certificate]) -> bool:
    key = None if signer.public_key is None else _spki(signer.public_key)
    return any(
        signer.der == cert.public_bytes(serialization.Encoding.DER) or key == _spki(cert.public_key())
        for cert in trusted
    )


def _check_correlation(message: cms.SignedMessage, request: BuiltRequest) -> None:
    message_type = _attribute(message, Attr.MESSAGE_TYPE, core.PrintableString, str)
    if message_type != str(int(MessageType.CERT_REP)):
        raise ScepClientError(f"reply messageType is {message_type!r}, not CertRep (3)")
    transaction_id = _attribute(message, Attr.TRANSACTION_ID, core.PrintableString, str)
    if transaction_id != request.transaction_id:
        raise ScepClientError(f"CertRep transactionID {transaction_id!r} is not ours ({request.transaction_id!r})")
    nonce = _attribute(message, Attr.RECIPIENT_NONCE, core.OctetString, bytes)
    if nonce is None:
        raise ScepClientError("CertRep has no recipientNonce")
    if not hmac.compare_digest(nonce, request.sender_nonce):
        raise ScepClientError("CertRep recipientNonce does not match our senderNonce")


def _status(message: cms.SignedMessage) -> PKIStatus:
    value = _attribute(message, Attr.PKI_STATUS, core.PrintableString, str)
    if value is None:
        raise ScepClientError("CertRep has no pkiStatus")
    try:
        return PKIStatus(value)
    except ValueError:
        raise ScepClientError(f"CertRep pkiStatus {value!r} is not defined") from None


def _failure(message: cms.SignedMessage) -> tuple[FailInfo | None, str | None]:
    """failInfo and failInfoText; a FAILURE without failInfo stays a FAILURE (fail_info None)."""
    value = _attribute(message, Attr.FAIL_INFO, core.PrintableString, str)
    text = _attribute(message, Attr.FAIL_INFO_TEXT, core.UTF8String, str)
    if value is None:
        return None, text
    try:
        return FailInfo(int(value)), text
    except ValueError:
        raise ScepClientError(f"CertRep failInfo {value!r} is not defined") from None


def _open_success(
    message: cms.SignedMessage, request: BuiltRequest, key: rsa.RSAPrivateKey, cert: x509.Certificate
) -> tuple[ContentCipher, tuple[x509.Certificate, ...], tuple[x509.CertificateRevocationList, ...]]:
    if not message.content:
        raise ScepClientError("CertRep SUCCESS has no pkcsPKIEnvelope")
    try:
        decrypted = cms.decrypt(message.content, key, cert)
        cert_ders, crl_ders = cms.read_certs_only(decrypted.content)
    except cms.EnvelopeRejected as exc:
        raise ScepClientError(f"CertRep envelope cannot be opened: {exc.reason}") from exc
    except ScepError as exc:
        raise ScepClientError(f"CertRep envelope cannot be opened: {exc}") from exc
    try:
        certificates = tuple(x509.load_der_x509_certificate(d) for d in cert_ders)
        crls = tuple(x509.load_der_x509_crl(d) for d in crl_ders)
    except ValueError as exc:
        raise ScepClientError(f"CertRep carries an unreadable certificate or CRL: {exc}") from exc
    if request.message_type is MessageType.GET_CRL and not crls:
        raise ScepClientError("CertRep SUCCESS to GetCRL carries no CRL")
    if request.message_type is not MessageType.GET_CRL and not certificates:
        raise ScepClientError("CertRep SUCCESS carries no certificate")
    return decrypted.cipher, certificates, crls


def _attribute(message: cms.SignedMessage, oid: Attr, spec: type[core.Asn1Value], kind: type[_T]) -> _T | None:
    try:
        value = message.attribute(oid, spec)
    except ScepError as exc:
        raise ScepClientError(f"CertRep attribute {oid.name} is malformed: {exc}") from exc
    if value is not None and not isinstance(value, kind):
        raise ScepClientError(f"CertRep attribute {oid.name} has the wrong type")
    return value


# --- GetCACert and GetCACaps -------------------------------------------------------------------------


def parse_get_ca_cert(body: bytes, content_type: str) -> list[x509.Certificate]:
    """The certificates of a GetCACert reply (RFC 8894 §4.2.1).

    ``application/x-x509-ca-cert`` is one DER certificate, ``application/x-x509-ca-ra-cert`` a
    degenerate certificates-only SignedData (§3.4); any other type is recognised by its content.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == CA_CERT:
        return [_load_one(body)]
    if media_type == CA_RA_CERT:
        return _load_certs_only(body)
    try:
        return [_load_one(body)]
    except ScepClientError:
        return _load_certs_only(body)


def _load_one(body: bytes) -> x509.Certificate:
    try:
        if body.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(body)
        return x509.load_der_x509_certificate(body)
    except ValueError as exc:
        raise ScepClientError(f"GetCACert reply is not a certificate: {exc}") from exc


def _load_certs_only(body: bytes) -> list[x509.Certificate]:
    try:
        ders, _ = cms.read_certs_only(body)
        certificates = [x509.load_der_x509_certificate(d) for d in ders]
    except (ScepError, ValueError) as exc:
        raise ScepClientError(f"GetCACert reply is not a certificates-only SignedData: {exc}") from exc
    if not certificates:
        raise ScepClientError("GetCACert reply holds no certificate")
    return certificates


def pick_recipient(certs: Sequence[x509.Certificate]) -> x509.Certificate:
    """The certificate to envelope requests to, chosen as Apple's clients do.

    First an RSA end-entity (RA) certificate whose keyUsage allows keyEncipherment, then an RSA
    end-entity certificate without keyUsage, else the RSA CA certificate lowest in the chain.
    """
    rsa_certs = [c for c in certs if isinstance(c.public_key(), rsa.RSAPublicKey)]
    ras = [c for c in rsa_certs if not _is_ca(c)]
    for cert in ras:
        usage = _key_usage(cert)
        if usage is not None and usage.key_encipherment:
            return cert
    for cert in ras:
        if _key_usage(cert) is None:
            return cert
    cas = [c for c in rsa_certs if _is_ca(c)]
    if not cas:
        raise ScepClientError("GetCACert returned no RSA certificate usable for key transport")
    issuers = {c.issuer for c in cas if c.issuer != c.subject}
    return next((c for c in cas if c.subject not in issuers), cas[0])


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return cert.issuer == cert.subject


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def parse_caps(text: str) -> frozenset[str]:
    """GetCACaps keywords, CR/LF or LF separated (RFC 8894 §3.5.2).

    Known keywords are returned in their RFC spelling whatever the case sent, so ``"AES" in caps``
    works against a CA that answers ``aes``; unknown keywords are kept as sent.
    """
    canonical = {k.lower(): k for k in KNOWN_CAPS}
    words = (line.strip() for line in text.splitlines())
    return frozenset(canonical.get(w.lower(), w) for w in words if w)


def choose_algorithms(caps: frozenset[str]) -> tuple[ContentCipher, DigestAlgorithm]:
    """Content cipher and digest the CA advertises, preferring AES-128 and SHA-256 (RFC 8894 §3.5.2).

    SCEPStandard implies AES and SHA-256. With neither AES nor DES3, or no SHA keyword, the legacy
    fallback is 3DES and SHA-1 (the RFC's own historical default, DES + MD5, is not offered).
    """
    standard = "SCEPStandard" in caps
    cipher = ContentCipher.AES128 if standard or "AES" in caps else ContentCipher.DES3
    if standard or "SHA-256" in caps:
        digest = DigestAlgorithm.SHA256
    elif "SHA-512" in caps:
        digest = DigestAlgorithm.SHA512
    else:
        digest = DigestAlgorithm.SHA1
    return cipher, digest
