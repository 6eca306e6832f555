"""Client side of SCEP: read a CertRep the way strict clients do (RFC 8894 §3.3.2).

Trusted signer, valid signature, same transactionID, recipientNonce = our senderNonce (§3.2.1.5);
on SUCCESS the envelope is opened with the request's signer key.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from scep_server.errors import ScepError, ScepServerError
from scep_server.scep import cms
from scep_server.scep.client.requests import BuiltRequest, spki
from scep_server.scep.envelope import EnvelopeRejected, decrypt
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, FailInfo, MessageType, PKIStatus

_T = TypeVar("_T")


class ScepClientError(ScepServerError):
    """A SCEP reply cannot be accepted: malformed, untrusted, or not an answer to our request."""


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
        wanted = spki(public_key)
        for cert in self.certificates:
            if spki(cert.public_key()) == wanted:
                return cert
        raise ScepClientError("the CertRep holds no certificate for the requested public key")


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
    key = None if signer.public_key is None else spki(signer.public_key)
    return any(
        signer.der == cert.public_bytes(serialization.Encoding.DER) or key == spki(cert.public_key())
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
        decrypted = decrypt(message.content, key, cert)
        cert_ders, crl_ders = cms.read_certs_only(decrypted.content)
    except EnvelopeRejected as exc:
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

