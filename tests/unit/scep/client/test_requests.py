"""Building what a device sends (scep_server/scep/client/requests.py), read back with cms and the envelope."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AttributeOID

from scep_server.scep import cms
from scep_server.scep.client import (
    BuiltRequest,
    build_cert_poll,
    build_get_cert,
    build_get_crl,
    build_pki_request,
    transaction_id_for,
)
from scep_server.scep.envelope import decrypt
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, MessageType
from tests.support.pki import name, self_signed

from .conftest import Pki

# --- transactionID and signer --------------------------------------------------------------------------


def test_transaction_id_is_upper_hex_sha1_of_spki(pki: Pki) -> None:
    spki = pki.device_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert transaction_id_for(pki.device_key.public_key()) == hashlib.sha1(spki).hexdigest().upper()


def test_self_signed_signer(pki: Pki) -> None:
    signer = pki.signer
    assert signer.subject == signer.issuer == name("device-1")
    signer.verify_directly_issued_by(signer)
    assert signer.public_key() == pki.device_key.public_key()
    usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    assert signer.not_valid_before_utc <= datetime.now(UTC) < signer.not_valid_after_utc
    assert signer.not_valid_after_utc - datetime.now(UTC) <= timedelta(days=1)


def test_build_csr_carries_the_challenge(pki: Pki) -> None:
    value = pki.csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
    assert value == b"s3cret"
    assert pki.csr.is_signature_valid


# --- builders --------------------------------------------------------------------------------------------


def _scep_attr(message: cms.SignedMessage, oid: Attr, spec: type[core.Asn1Value]) -> object:
    return message.attribute(oid, spec)


@pytest.mark.parametrize(("cipher", "digest"), list(itertools.product(ContentCipher, DigestAlgorithm)))
def test_pkcsreq_reads_back(pki: Pki, cipher: ContentCipher, digest: DigestAlgorithm) -> None:
    built = pki.pkcsreq(cipher=cipher, digest=digest)
    message = cms.parse_signed(built.der)
    message.verify()
    assert message.digest is digest
    assert message.signer.der == pki.signer.public_bytes(serialization.Encoding.DER)
    assert _scep_attr(message, Attr.MESSAGE_TYPE, core.PrintableString) == "19"
    assert _scep_attr(message, Attr.TRANSACTION_ID, core.PrintableString) == built.transaction_id
    assert _scep_attr(message, Attr.SENDER_NONCE, core.OctetString) == built.sender_nonce
    assert len(built.sender_nonce) == 16
    assert built.transaction_id == transaction_id_for(pki.device_key.public_key())
    assert built.message_type is MessageType.PKCS_REQ
    assert message.content is not None
    opened = decrypt(message.content, pki.ra_key, pki.ra)
    assert opened.cipher is cipher
    assert opened.content == pki.csr.public_bytes(serialization.Encoding.DER)


def test_attribute_encodings_are_printable_and_octet_strings(pki: Pki) -> None:
    message = cms.parse_signed(pki.pkcsreq().der)
    tags = {oid: message.attributes[oid.value].dump()[0] for oid in (Attr.MESSAGE_TYPE, Attr.TRANSACTION_ID)}
    assert tags == {Attr.MESSAGE_TYPE: 0x13, Attr.TRANSACTION_ID: 0x13}
    assert message.attributes[Attr.SENDER_NONCE.value].dump()[0] == 0x04


def test_each_request_gets_a_fresh_nonce(pki: Pki) -> None:
    assert pki.pkcsreq().sender_nonce != pki.pkcsreq().sender_nonce


def test_renewal_and_explicit_transaction_id(pki: Pki) -> None:
    built = pki.pkcsreq(renewal=True, transaction_id="renew-1")
    message = cms.parse_signed(built.der)
    assert built.message_type is MessageType.RENEWAL_REQ
    assert _scep_attr(message, Attr.MESSAGE_TYPE, core.PrintableString) == "17"
    assert _scep_attr(message, Attr.TRANSACTION_ID, core.PrintableString) == "renew-1"


def test_explicit_sender_nonce(pki: Pki) -> None:
    built = build_pki_request(
        MessageType.PKCS_REQ, b"x", signer_cert=pki.signer, signer_key=pki.device_key, recipient=pki.ra,
        transaction_id="T", sender_nonce=b"n" * 16,
    )  # fmt: skip
    assert built.sender_nonce == b"n" * 16
    assert _scep_attr(cms.parse_signed(built.der), Attr.SENDER_NONCE, core.OctetString) == b"n" * 16


def _opened(pki: Pki, built: BuiltRequest) -> bytes:
    message = cms.parse_signed(built.der)
    message.verify()
    assert message.content is not None
    return decrypt(message.content, pki.ra_key, pki.ra).content


def test_cert_poll_content_is_issuer_and_subject(pki: Pki) -> None:
    built = build_cert_poll(
        pki.ca.subject, name("device-1"), transaction_id="T-1", signer_cert=pki.signer,
        signer_key=pki.device_key, recipient=pki.ra,
    )  # fmt: skip
    assert built.message_type is MessageType.CERT_POLL
    assert built.transaction_id == "T-1"
    content = core.Sequence.load(_opened(pki, built))
    assert asn1_x509.Name.load(content[0].dump()).dump() == pki.ca.subject.public_bytes()
    assert asn1_x509.Name.load(content[1].dump()).dump() == name("device-1").public_bytes()


@pytest.mark.parametrize(("builder", "message_type"), [(build_get_cert, "21"), (build_get_crl, "22")])
def test_get_cert_and_get_crl_content_is_issuer_and_serial(
    pki: Pki, builder: Callable[..., BuiltRequest], message_type: str
) -> None:
    built = builder(pki.ca.subject, 0x1234, signer_cert=pki.signer, signer_key=pki.device_key, recipient=pki.ra)
    assert _scep_attr(cms.parse_signed(built.der), Attr.MESSAGE_TYPE, core.PrintableString) == message_type
    content = asn1_cms.IssuerAndSerialNumber.load(_opened(pki, built))
    assert content["serial_number"].native == 0x1234
    assert content["issuer"].dump() == pki.ca.subject.public_bytes()
    assert built.transaction_id.isalnum()


@pytest.mark.parametrize("transaction_id", ["", "under_score", "ünïcode", "new\nline"])
def test_transaction_id_must_be_printable(pki: Pki, transaction_id: str) -> None:
    with pytest.raises(ValueError, match="PrintableString"):
        build_pki_request(
            MessageType.PKCS_REQ, b"x", signer_cert=pki.signer, signer_key=pki.device_key, recipient=pki.ra,
            transaction_id=transaction_id,
        )  # fmt: skip


def test_builder_refuses_misuse(pki: Pki) -> None:
    common = {"signer_cert": pki.signer, "signer_key": pki.device_key, "transaction_id": "T"}
    with pytest.raises(ValueError, match="CertRep"):
        build_pki_request(MessageType.CERT_REP, b"x", recipient=pki.ra, **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sender_nonce"):
        build_pki_request(MessageType.PKCS_REQ, b"x", recipient=pki.ra, sender_nonce=b"", **common)  # type: ignore[arg-type]
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ValueError, match="RSA"):
        build_pki_request(MessageType.PKCS_REQ, b"x", recipient=self_signed("EC RA", ec_key, ca=False), **common)  # type: ignore[arg-type]
