"""A key in memory as a Signer and Decrypter: what it signs verifies with its public key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

from scep_server.ca.keys import RaKey, Signer, signature_hash_for
from scep_server.ca.keys.local import LocalKey
from scep_server.scep import cms
from scep_server.scep.envelope import decrypt, encrypt
from scep_server.scep.types import ContentCipher, DigestAlgorithm
from tests.support import pki

from .support import KINDS, cached_key

NOW = datetime(2026, 3, 1, tzinfo=UTC)
NAME = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "signer")])


@pytest.fixture(params=KINDS)
def key(request: pytest.FixtureRequest) -> LocalKey:
    return LocalKey(cached_key(request.param))


def verify(public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, signature: bytes, data: bytes,
           algorithm: hashes.HashAlgorithm) -> None:
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, data, padding.PKCS1v15(), algorithm)
    else:
        public.verify(signature, data, ec.ECDSA(algorithm))


def certificate_builder(key: Signer) -> x509.CertificateBuilder:
    return pki.certificate_builder(NAME, key.public_key(), ca=None, serial=1, not_before=NOW,
                                   not_after=NOW + timedelta(days=1))


@pytest.mark.parametrize("algorithm", [None, hashes.SHA1(), hashes.SHA512()])
def test_raw_signatures_verify(key: LocalKey, algorithm: hashes.HashAlgorithm | None) -> None:
    signature = key.sign(b"to be signed", algorithm)
    verify(key.public_key(), signature, b"to be signed", algorithm or key.signature_hash)


def test_the_own_hash_follows_the_key_size(key: LocalKey) -> None:
    public = key.public_key()
    expected = "sha384" if isinstance(public, ec.EllipticCurvePublicKey) and public.curve.key_size == 384 else "sha256"
    assert key.signature_hash.name == expected
    assert signature_hash_for(ec.generate_private_key(ec.SECP521R1()).public_key()).name == "sha512"


def test_certificates_crls_and_ocsp_responses_are_signed_by_the_key(key: LocalKey) -> None:
    cert = key.sign_certificate(certificate_builder(key))
    cert.verify_directly_issued_by(cert)
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == key.signature_hash.name
    assert key.sign_certificate(certificate_builder(key), hashes.SHA512()).signature_hash_algorithm.name == "sha512"
    crl = key.sign_crl(
        x509.CertificateRevocationListBuilder().issuer_name(NAME).last_update(NOW).next_update(NOW + timedelta(days=1))
    )
    assert crl.is_signature_valid(key.public_key())
    response = key.sign_ocsp_response(
        ocsp.OCSPResponseBuilder()
        .add_response(cert, cert, hashes.SHA256(), ocsp.OCSPCertStatus.GOOD, NOW, NOW + timedelta(hours=1), None, None)
        .responder_id(ocsp.OCSPResponderEncoding.HASH, cert)
    )
    verify(key.public_key(), response.signature, response.tbs_response_bytes, key.signature_hash)


def test_an_rsa_key_decrypts_what_its_public_key_encrypted() -> None:
    key = LocalKey(cached_key("rsa"))
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    assert isinstance(key, RaKey)
    public = key.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert key.decrypt(public.encrypt(b"content key", oaep), oaep) == b"content key"
    with pytest.raises(ValueError):
        key.decrypt(b"\x00" * 256, oaep)


def test_an_ec_key_does_not_decrypt() -> None:
    with pytest.raises(TypeError, match="EC key cannot decrypt"):
        LocalKey(cached_key("P-256")).decrypt(b"x", padding.PKCS1v15())


def test_repr_hides_the_key(key: LocalKey) -> None:
    assert repr(key) == "LocalKey()"


def test_the_scep_package_signs_and_decrypts_through_it() -> None:
    """scep/ declares its own Protocols; the CA's keys satisfy them without scep/ knowing ca/."""
    key = LocalKey(cached_key("rsa"))
    cert = key.sign_certificate(certificate_builder(key))
    der = cms.sign(b"reply", signer_cert=cert, signer_key=key, digest=DigestAlgorithm.SHA1, attributes=[])
    cms.parse_signed(der).verify()
    assert decrypt(encrypt(b"request", cert, ContentCipher.AES256), key, cert).content == b"request"
