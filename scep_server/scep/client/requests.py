"""Client side of SCEP (RFC 8894 §3.1, §3.3): build the pkiMessages a device sends.

A request is enveloped to the CA or RA certificate, then signed by the client's signer; every CMS
operation goes through :mod:`scep_server.scep.cms`. Pure functions over bytes and x509 objects.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import AttributeOID

from scep_server.errors import ScepError
from scep_server.scep import cms
from scep_server.scep.device_key import DeviceKey
from scep_server.scep.envelope import encrypt
from scep_server.scep.message import IssuerAndSubject
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, KeyTransport, MessageType

NONCE_SIZE = 16
_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]+")


@dataclass(frozen=True, slots=True)
class BuiltRequest:
    """A signed pkiMessage ready to send, and what its CertRep must echo."""

    der: bytes
    transaction_id: str
    sender_nonce: bytes
    message_type: MessageType


def transaction_id_for(public_key: PublicKeyTypes) -> str:
    """Upper-case hex SHA-1 of the DER SubjectPublicKeyInfo, as Apple's clients compute it."""
    return hashlib.sha1(spki(public_key)).hexdigest().upper()


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
        envelope = encrypt(content, recipient, cipher, key_transport)
    except ScepError as exc:
        raise ValueError(f"cannot envelope to the recipient: {exc}") from exc
    attributes = [
        cms.make_attribute(Attr.MESSAGE_TYPE, core.PrintableString(str(int(message_type)))),
        cms.make_attribute(Attr.TRANSACTION_ID, core.PrintableString(transaction_id)),
        cms.make_attribute(Attr.SENDER_NONCE, core.OctetString(nonce)),
    ]
    signer = DeviceKey(signer_key)
    der = cms.sign(envelope, signer_cert=signer_cert, signer_key=signer, digest=digest, attributes=attributes)
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


def spki(public_key: PublicKeyTypes) -> bytes:
    """The DER SubjectPublicKeyInfo of ``public_key``."""
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
