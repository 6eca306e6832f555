"""The checks on a PKCS#10 request before anything is issued (scep_server/ca/csr.py): its signature, key and
names, and the Windows SID extension's encoding."""

from __future__ import annotations

import pytest
from asn1crypto import algos, core
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from scep_server.ca.csr import UPN_OID, check_csr, sid_extension_value
from scep_server.errors import BadAlg, BadMessageCheck, BadRequest

from .support import leaf_key, make_csr, policy


def resign_csr(
    csr: x509.CertificateSigningRequest, key: rsa.RSAPrivateKey, hash_name: str
) -> x509.CertificateSigningRequest:
    """The same CSR signed with a hash cryptography will not sign CSRs with (SHA-1, MD5)."""
    request = asn1_csr.CertificationRequest.load(csr.public_bytes(serialization.Encoding.DER))
    info = request["certification_request_info"]
    hash_class = {"sha1": hashes.SHA1, "md5": hashes.MD5}[hash_name]
    signature = key.sign(info.dump(), padding.PKCS1v15(), hash_class())
    algorithm = algos.SignedDigestAlgorithm({"algorithm": f"{hash_name}_rsa", "parameters": core.Null()})
    signed = asn1_csr.CertificationRequest(
        {"certification_request_info": info, "signature_algorithm": algorithm, "signature": signature}
    )
    return x509.load_der_x509_csr(signed.dump())


@pytest.mark.parametrize("kind", ["rsa2048", "rsa4096", "P-256", "P-384", "P-521"])
def test_check_csr_accepts(kind: str) -> None:
    check_csr(make_csr(leaf_key(kind)), policy())


def test_check_csr_rejects_a_tampered_signature() -> None:
    der = bytearray(make_csr().public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01
    with pytest.raises(BadMessageCheck, match="signature does not verify"):
        check_csr(x509.load_der_x509_csr(bytes(der)), policy())


def test_check_csr_rejects_a_tampered_body() -> None:
    csr = make_csr(subject="CN=alice")
    der = csr.public_bytes(serialization.Encoding.DER).replace(b"alice", b"mallo")
    with pytest.raises(BadMessageCheck):
        check_csr(x509.load_der_x509_csr(der), policy())


def test_check_csr_rejects_small_rsa() -> None:
    with pytest.raises(BadRequest, match="1024 bits: this profile needs at least 2048"):
        check_csr(make_csr(leaf_key("rsa1024")), policy())


def test_check_csr_rejects_large_rsa() -> None:
    with pytest.raises(BadRequest, match="at most 2048"):
        check_csr(make_csr(leaf_key("rsa3072")), policy(max_rsa_bits=2048))


def test_check_csr_rejects_a_disallowed_curve() -> None:
    with pytest.raises(BadRequest, match="curve P-521 is not allowed"):
        check_csr(make_csr(leaf_key("P-521")), policy(allowed_curves=frozenset({"P-256", "P-384"})))
    with pytest.raises(BadRequest, match="curve secp256k1 is not allowed"):
        check_csr(make_csr(ec.generate_private_key(ec.SECP256K1())), policy())


def test_check_csr_rejects_a_disallowed_key_type() -> None:
    with pytest.raises(BadRequest, match="EC keys are not allowed by this profile \\(allowed: rsa\\)"):
        check_csr(make_csr(leaf_key("P-256")), policy(allowed_key_types=frozenset({"rsa"})))


def test_check_csr_rejects_ed25519_as_bad_alg() -> None:
    csr = make_csr(ed25519.Ed25519PrivateKey.generate(), algorithm=None)
    with pytest.raises(BadAlg, match="Ed25519 keys are not supported"):
        check_csr(csr, policy())


def test_check_csr_accepts_sha1_signatures() -> None:
    key = leaf_key()
    assert isinstance(key, rsa.RSAPrivateKey)
    csr = resign_csr(make_csr(key), key, "sha1")
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA1)
    check_csr(csr, policy())
    tampered = bytearray(csr.public_bytes(serialization.Encoding.DER))
    tampered[-5] ^= 0x01
    with pytest.raises(BadMessageCheck):
        check_csr(x509.load_der_x509_csr(bytes(tampered)), policy())


def test_check_csr_rejects_md5_signatures() -> None:
    key = leaf_key()
    assert isinstance(key, rsa.RSAPrivateKey)
    with pytest.raises(BadAlg, match="MD5"):
        check_csr(resign_csr(make_csr(key), key, "md5"), policy())


def test_check_csr_rejects_an_empty_subject_without_san() -> None:
    with pytest.raises(BadRequest, match="empty subject and no subjectAltName"):
        check_csr(make_csr(subject=""), policy())
    check_csr(make_csr(subject="", sans=[x509.DNSName("host.example")]), policy())


def test_check_csr_rejects_a_upn_that_is_not_a_string() -> None:
    bad = x509.OtherName(UPN_OID, core.Integer(5).dump())
    with pytest.raises(BadRequest, match="UPN"):
        check_csr(make_csr(sans=[bad]), policy())


def test_sid_extension_value_is_the_windows_encoding() -> None:
    # GeneralNames { [0] otherName { 1.3.6.1.4.1.311.25.2.1, [0] EXPLICIT OCTET STRING "S-1-5-21" } }
    assert sid_extension_value("S-1-5-21").value == bytes.fromhex(
        "301aa018060a2b060104018237190201a00a0408532d312d352d3231"
    )
