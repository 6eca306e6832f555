"""open_request: every kind of pkiMessage decodes to its own typed value, with exactly its content."""

from __future__ import annotations

from dataclasses import fields
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from scep_server.scep import client, message
from scep_server.scep.device_key import DeviceKey
from scep_server.scep.types import ContentCipher, KeyTransport, MessageType, PKIStatus

ISSUER = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Message Test CA")])
SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-7")])
SHARED = {"context", "cipher", "key_transport"}


@cache
def _party(cn: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, client.self_signed_signer(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))


def _open(built: client.BuiltRequest) -> message.PkiRequest:
    ra_key, ra_cert = _party("Message Test RA")
    signed, context = message.read_envelope(built.der)
    return message.open_request(signed, context, ra_key=ra_key, ra_cert=ra_cert, options=message.DecodeOptions())


def _signed() -> dict[str, object]:
    key, signer = _party("device-7")
    return {"signer_cert": signer, "signer_key": key, "recipient": _party("Message Test RA")[1]}


@pytest.mark.parametrize("renewal", [False, True], ids=["PKCSReq", "RenewalReq"])
def test_a_certification_request(renewal: bool) -> None:
    key, _ = _party("device-7")
    csr = client.build_csr(key, SUBJECT, challenge_password="secret")
    request = _open(client.build_pkcsreq(csr, renewal=renewal, cipher=ContentCipher.AES256, **_signed()))  # type: ignore[arg-type]
    assert isinstance(request, message.CertificateRequest)
    assert request.renewal is renewal
    assert request.message_type is (MessageType.RENEWAL_REQ if renewal else MessageType.PKCS_REQ)
    assert request.csr_der == csr.public_bytes(Encoding.DER) and request.csr.subject == SUBJECT
    assert (request.cipher, request.key_transport) == (ContentCipher.AES256, KeyTransport.RSA_PKCS1V15)
    assert {f.name for f in fields(request)} == SHARED | {"csr", "csr_der", "renewal"}


def test_a_cert_poll() -> None:
    request = _open(client.build_cert_poll(ISSUER, SUBJECT, transaction_id="TX-POLL", **_signed()))  # type: ignore[arg-type]
    assert isinstance(request, message.CertPoll) and request.message_type is MessageType.CERT_POLL
    assert (request.issuer, request.subject, request.context.transaction_id) == (ISSUER, SUBJECT, "TX-POLL")
    assert {f.name for f in fields(request)} == SHARED | {"issuer", "subject"}


@pytest.mark.parametrize(
    ("build", "kind", "message_type"),
    [(client.build_get_cert, message.GetCert, MessageType.GET_CERT),
     (client.build_get_crl, message.GetCrl, MessageType.GET_CRL)],
    ids=["GetCert", "GetCRL"],
)
def test_an_issuer_and_serial(build: object, kind: type, message_type: MessageType) -> None:
    request = _open(build(ISSUER, 0x1234ABCD, **_signed()))  # type: ignore[operator]
    assert isinstance(request, kind) and request.message_type is message_type
    assert (request.issuer, request.serial) == (ISSUER, 0x1234ABCD)
    assert {f.name for f in fields(request)} == SHARED | {"issuer", "serial"}


def test_the_reply_signer_signs_cert_reps() -> None:
    ra_key, ra_cert = _party("Message Test RA")
    key, signer = _party("device-7")
    built = client.build_get_crl(ISSUER, 1, **_signed())  # type: ignore[arg-type]
    request = _open(built)
    reply = message.cert_rep_pending(request.context, message.CertRepSigner(ra_cert, DeviceKey(ra_key)))
    answer = client.parse_cert_rep(reply, request=built, signer_key=key, signer_cert=signer, trusted_signers=[ra_cert])
    assert answer.status is PKIStatus.PENDING
