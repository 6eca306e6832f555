"""Proof of possession: a CSR signed by its own key verifies, SHA-1 included; a tampered one does not."""

from __future__ import annotations

from functools import cache

import pytest
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from scep_server.pki.csr import csr_signature_valid

NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-1")])


@cache
def _key(kind: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _csr(kind: str) -> x509.CertificateSigningRequest:
    return x509.CertificateSigningRequestBuilder().subject_name(NAME).sign(_key(kind), hashes.SHA256())


def _resigned(
    csr: x509.CertificateSigningRequest, kind: str, *, tamper: bool = False
) -> x509.CertificateSigningRequest:
    """The CSR signed with SHA-1, which cryptography neither makes nor checks on CSRs."""
    key, tbs = _key(kind), csr.tbs_certrequest_bytes
    if isinstance(key, rsa.RSAPrivateKey):
        signature, algorithm = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1()), "sha1_rsa"
    else:
        signature, algorithm = key.sign(tbs, ec.ECDSA(hashes.SHA1())), "sha1_ecdsa"
    if tamper:
        signature = signature[:-1] + bytes([signature[-1] ^ 1])
    request = asn1_csr.CertificationRequest({
        "certification_request_info": asn1_csr.CertificationRequestInfo.load(tbs),
        "signature_algorithm": {"algorithm": algorithm},
        "signature": signature,
    })
    return x509.load_der_x509_csr(request.dump())


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_a_self_signed_csr_verifies(kind: str) -> None:
    assert csr_signature_valid(_csr(kind))


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_a_sha1_signature_is_checked_by_hand(kind: str) -> None:
    csr = _resigned(_csr(kind), kind)
    assert not csr.is_signature_valid  # what cryptography says on its own
    assert csr_signature_valid(csr)
    assert not csr_signature_valid(_resigned(_csr(kind), kind, tamper=True))


def test_a_csr_signed_by_another_key_does_not_verify() -> None:
    stranger = x509.CertificateSigningRequestBuilder().subject_name(NAME)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signed = stranger.sign(other, hashes.SHA256())
    forged = x509.load_der_x509_csr(
        asn1_csr.CertificationRequest({
            "certification_request_info": asn1_csr.CertificationRequestInfo.load(_csr("rsa").tbs_certrequest_bytes),
            "signature_algorithm": {"algorithm": "sha256_rsa"},
            "signature": signed.signature,
        }).dump()
    )
    assert not csr_signature_valid(forged)
