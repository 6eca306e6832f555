"""Builders signed over their to-be-signed bytes (``scep_server.ca.keys.tbs``), as keys on a token sign.

The signer here holds its key in memory and signs only raw bytes, like a token: an RSA PKCS#1 v1.5
signature is deterministic, so the assembled structure must be byte for byte what cryptography's
builder makes with the key itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

from scep_server.ca.keys import PublicKey, SigningHash, tbs
from scep_server.ca.keys.generate import PrivateKey
from scep_server.ca.keys.local import LocalKey

from .support import KINDS, cached_key, self_signed

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DER = serialization.Encoding.DER
HASHES: list[SigningHash] = [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()]


@dataclass(frozen=True)
class RawOnly:
    """Signs raw bytes only: what the token's keys give :mod:`tbs`."""

    key: LocalKey

    def public_key(self) -> PublicKey:
        return self.key.public_key()

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
        return self.key.sign(data, algorithm)


def verify(public_key: PublicKey, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm) -> None:
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
    else:
        public_key.verify(signature, data, ec.ECDSA(algorithm))


def cert_builder(subject_key: PrivateKey) -> x509.CertificateBuilder:
    name = x509.Name.from_rfc4514_string("CN=tbs test")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(subject_key.public_key())
        .serial_number(1234567)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )


def crl_builder() -> x509.CertificateRevocationListBuilder:
    revoked = x509.RevokedCertificateBuilder().serial_number(42).revocation_date(NOW).build()
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(x509.Name.from_rfc4514_string("CN=tbs test"))
        .last_update(NOW)
        .next_update(NOW + timedelta(days=1))
        .add_revoked_certificate(revoked)
        .add_extension(x509.CRLNumber(7), critical=False)
    )


def ocsp_builder(
    responder: x509.Certificate,
    *,
    with_certs: bool = True,
    encoding: ocsp.OCSPResponderEncoding = ocsp.OCSPResponderEncoding.HASH,
) -> ocsp.OCSPResponseBuilder:
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            b"\x01" * 20, b"\x02" * 20, 99, hashes.SHA1(), ocsp.OCSPCertStatus.GOOD, NOW, NOW + timedelta(hours=1),
            None, None,
        )
        .responder_id(encoding, responder)
        .add_extension(x509.OCSPNonce(b"nonce-1234"), critical=False)
    )  # fmt: skip
    return builder.certificates([responder]) if with_certs else builder


@pytest.mark.parametrize("algorithm", HASHES, ids=lambda algorithm: algorithm.name)
def test_an_rsa_certificate_is_what_the_builder_makes_with_the_key(algorithm: SigningHash) -> None:
    key = cached_key("rsa")
    assembled = tbs.sign_certificate(cert_builder(key), RawOnly(LocalKey(key)), algorithm)
    direct = cert_builder(key).sign(key, algorithm)
    assert assembled.public_bytes(DER) == direct.public_bytes(DER)


@pytest.mark.parametrize("kind", KINDS)
def test_a_certificate_carries_the_real_signature(kind: str) -> None:
    key = cached_key(kind)
    cert = tbs.sign_certificate(cert_builder(key), RawOnly(LocalKey(key)), hashes.SHA384())
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha384"
    cert.verify_directly_issued_by(cert)  # self-signed: the key signed it, not the stand-in
    verify(key.public_key(), cert.signature, cert.tbs_certificate_bytes, hashes.SHA384())


def test_an_rsa_crl_is_what_the_builder_makes_with_the_key() -> None:
    key = cached_key("rsa")
    assembled = tbs.sign_crl(crl_builder(), RawOnly(LocalKey(key)), hashes.SHA256())
    assert assembled.public_bytes(DER) == crl_builder().sign(key, hashes.SHA256()).public_bytes(DER)


@pytest.mark.parametrize("kind", KINDS)
def test_a_crl_carries_the_real_signature(kind: str) -> None:
    key = cached_key(kind)
    crl = tbs.sign_crl(crl_builder(), RawOnly(LocalKey(key)), hashes.SHA256())
    assert crl.is_signature_valid(key.public_key())
    assert not crl.is_signature_valid(tbs.stand_in_for(key.public_key()).public_key())
    assert crl.get_revoked_certificate_by_serial_number(42) is not None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("with_certs", [True, False], ids=["certs", "no-certs"])
def test_an_ocsp_response_carries_the_real_signature(kind: str, with_certs: bool) -> None:
    key = cached_key(kind)
    responder = self_signed(key, "responder")
    response = tbs.sign_ocsp_response(ocsp_builder(responder, with_certs=with_certs), RawOnly(LocalKey(key)),
                                      hashes.SHA256())  # fmt: skip
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.serial_number == 99 and response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.certificates == ([responder] if with_certs else [])
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"nonce-1234"
    assert response.signature_hash_algorithm is not None and response.signature_hash_algorithm.name == "sha256"
    verify(key.public_key(), response.signature, response.tbs_response_bytes, hashes.SHA256())


@pytest.mark.parametrize("encoding", list(ocsp.OCSPResponderEncoding), ids=lambda encoding: encoding.name)
def test_an_ocsp_response_names_the_real_responder(encoding: ocsp.OCSPResponderEncoding) -> None:
    key = cached_key("P-256")
    responder = self_signed(key, "the responder")
    response = tbs.sign_ocsp_response(ocsp_builder(responder, encoding=encoding), RawOnly(LocalKey(key)),
                                      hashes.SHA256())  # fmt: skip
    direct = ocsp_builder(responder, encoding=encoding).sign(key, hashes.SHA256())
    assert (response.responder_name, response.responder_key_hash) == (direct.responder_name, direct.responder_key_hash)
    assert (response.responder_name or response.responder_key_hash) is not None


def test_an_ocsp_builder_without_a_responder_is_refused_as_cryptography_refuses_it() -> None:
    key = cached_key("rsa")
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        b"\x01" * 20, b"\x02" * 20, 1, hashes.SHA1(), ocsp.OCSPCertStatus.GOOD, NOW, None, None, None
    )
    with pytest.raises(ValueError, match="responder_id"):
        builder.sign(key, hashes.SHA256())
    with pytest.raises(ValueError, match="responder_id"):
        tbs.sign_ocsp_response(builder, RawOnly(LocalKey(key)), hashes.SHA256())


def test_the_stand_in_keys_follow_the_family_and_are_made_once() -> None:
    rsa_public, ec_public = cached_key("rsa").public_key(), cached_key("P-384").public_key()
    assert isinstance(tbs.stand_in_for(rsa_public), rsa.RSAPrivateKey)
    assert isinstance(tbs.stand_in_for(ec_public), ec.EllipticCurvePrivateKey)
    assert tbs.stand_in_for(ec_public) is tbs.stand_in_for(cached_key("P-256").public_key())
    assert tbs.stand_in_for(rsa_public) is tbs.stand_in_for(rsa_public)
