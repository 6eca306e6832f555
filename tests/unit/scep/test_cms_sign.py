"""``cms.sign`` encodes a signer's fixed fields once and each message's own parts per call: the result must
be the very DER asn1crypto builds from the whole structure, for RSA (deterministic, so byte for byte) and
ECDSA (same structure, a valid signature), with and without content and extra certificates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from asn1crypto import algos, core
from asn1crypto import cms as asn1_cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from scep_server.ca.keys.local import LocalKey
from scep_server.scep import cms
from scep_server.scep.types import Attr, DigestAlgorithm

WHEN = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)


def _certificate(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, name: str, serial: int) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(serial).not_valid_before(datetime(2026, 1, 1)).not_valid_after(datetime(2027, 1, 1))
        .sign(key, hashes.SHA256())
    )


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_CERT = _certificate(RSA_KEY, "RA", 0x1234_5678_9ABC)
EXTRA = _certificate(rsa.generate_private_key(public_exponent=65537, key_size=2048), "CA", 7)


def _attributes() -> list[asn1_cms.CMSAttribute]:
    return [
        cms.make_attribute(Attr.MESSAGE_TYPE, core.PrintableString("3")),
        cms.make_attribute(Attr.TRANSACTION_ID, core.PrintableString("4F2A")),
        cms.make_attribute(Attr.SENDER_NONCE, core.OctetString(b"\x01" * 16)),
    ]


def _whole_structure(content: bytes | None, cert: x509.Certificate, extra: list[x509.Certificate],
                     digest: DigestAlgorithm, signature_algorithm: str, signature: bytes) -> bytes:
    """The SignedData built by asn1crypto from one nested value, as the encoder did before."""
    attrs = asn1_cms.CMSAttributes([
        cms.make_attribute(Attr.CONTENT_TYPE, asn1_cms.ContentType("data")),
        cms.make_attribute(Attr.MESSAGE_DIGEST, core.OctetString(cms.digest_of(digest, content or b""))),
        cms.make_attribute(Attr.SIGNING_TIME, asn1_cms.Time({"utc_time": WHEN})),
        *_attributes(),
    ])
    tbs = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))["tbs_certificate"]
    signer_info = asn1_cms.SignerInfo({
        "version": "v1",
        "sid": asn1_cms.SignerIdentifier({"issuer_and_serial_number": asn1_cms.IssuerAndSerialNumber(
            {"issuer": tbs["issuer"], "serial_number": tbs["serial_number"]})}),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest.value}),
        "signed_attrs": attrs,
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": signature_algorithm}),
        "signature": signature,
    })
    encap: dict[str, object] = {"content_type": "data"}
    if content is not None:
        encap["content"] = content
    signed = asn1_cms.SignedData({
        "version": "v1",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest.value})],
        "encap_content_info": encap,
        "certificates": [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER))
                         for c in [cert, *extra]],
        "signer_infos": [signer_info],
    })
    return bytes(asn1_cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def _signature_of(der: bytes) -> bytes:
    return bytes(asn1_cms.ContentInfo.load(der)["content"]["signer_infos"][0]["signature"].native)


@pytest.mark.parametrize("content", [None, b"", b"enveloped" * 300])
@pytest.mark.parametrize("extra", [[], [EXTRA]])
@pytest.mark.parametrize("digest", [DigestAlgorithm.SHA256, DigestAlgorithm.SHA1, DigestAlgorithm.SHA512])
def test_an_rsa_signed_data_is_byte_for_byte_the_whole_structure(
    content: bytes | None, extra: list[x509.Certificate], digest: DigestAlgorithm
) -> None:
    der = cms.sign(content, signer_cert=RSA_CERT, signer_key=LocalKey(RSA_KEY), digest=digest,
                   attributes=_attributes(), extra_certificates=extra, signing_time=WHEN)
    assert der == _whole_structure(content, RSA_CERT, extra, digest, "rsassa_pkcs1v15", _signature_of(der))
    signed = cms.parse_signed(der)
    signed.verify()
    assert signed.attribute(Attr.TRANSACTION_ID, core.PrintableString) == "4F2A"


def test_the_rsa_signature_covers_the_set_of_encoding_of_the_attributes() -> None:
    der = cms.sign(b"payload", signer_cert=RSA_CERT, signer_key=LocalKey(RSA_KEY), digest=DigestAlgorithm.SHA256,
                   attributes=_attributes(), signing_time=WHEN)
    signer_info = asn1_cms.ContentInfo.load(der)["content"]["signer_infos"][0]
    signed_attrs = signer_info["signed_attrs"].dump()
    assert signed_attrs[0] == 0xA0
    RSA_KEY.public_key().verify(_signature_of(der), b"\x31" + signed_attrs[1:], padding.PKCS1v15(), hashes.SHA256())


def test_an_ecdsa_signed_data_has_the_whole_structure_and_a_valid_signature() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(key, "EC signer", 99)
    der = cms.sign(b"payload", signer_cert=cert, signer_key=LocalKey(key), digest=DigestAlgorithm.SHA256,
                   attributes=_attributes(), signing_time=WHEN)
    signature = _signature_of(der)
    assert der == _whole_structure(b"payload", cert, [], DigestAlgorithm.SHA256, "sha256_ecdsa", signature)
    signed_attrs = asn1_cms.ContentInfo.load(der)["content"]["signer_infos"][0]["signed_attrs"].dump()
    key.public_key().verify(signature, b"\x31" + signed_attrs[1:], ec.ECDSA(hashes.SHA256()))


def test_signers_do_not_share_their_fixed_parts() -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = _certificate(other_key, "RA 2", 2)
    first = cms.sign(b"x", signer_cert=RSA_CERT, signer_key=LocalKey(RSA_KEY), digest=DigestAlgorithm.SHA256,
                     attributes=_attributes(), signing_time=WHEN)
    second = cms.sign(b"x", signer_cert=other, signer_key=LocalKey(other_key), digest=DigestAlgorithm.SHA256,
                      attributes=_attributes(), signing_time=WHEN)
    for der, serial in ((first, 0x1234_5678_9ABC), (second, 2)):
        signed = cms.parse_signed(der)
        signed.verify()
        assert signed.signer.serial == serial


@pytest.mark.parametrize(("oid", "value"), [
    (Attr.CONTENT_TYPE, asn1_cms.ContentType("data")),
    (Attr.MESSAGE_DIGEST, core.OctetString(b"\x05" * 32)),
    (Attr.SIGNING_TIME, asn1_cms.Time({"utc_time": WHEN})),
    (Attr.TRANSACTION_ID, core.PrintableString("0123ABCD")),
    (Attr.SENDER_NONCE, core.OctetString(b"\x07" * 16)),
    (Attr.FAIL_INFO_TEXT, core.UTF8String("no such transaction")),
])
def test_an_attribute_is_encoded_as_asn1crypto_encodes_the_whole_attribute(oid: Attr, value: core.Asn1Value) -> None:
    known = oid.value in asn1_cms.CMSAttributeType._map
    whole = asn1_cms.CMSAttribute({"type": oid.value, "values": [value if known else core.Any.load(value.dump())]})
    built = cms.make_attribute(oid, value)
    assert built.dump() == whole.dump()
    assert asn1_cms.CMSAttribute.load(built.dump())["values"][0].dump() == value.dump()
