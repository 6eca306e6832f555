from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scep_server.ca.keys.file import PrivateKey
from scep_server.ca.signing import ca_hash, check_hash_name, is_issued_by, is_self_signed, sign_certificate

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def builder(subject: str, key: PrivateKey, issuer: str | None = None) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string(subject))
        .issuer_name(x509.Name.from_rfc4514_string(issuer or subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )


@pytest.fixture(scope="module", params=["rsa", "ec"])
def key(request: pytest.FixtureRequest) -> PrivateKey:
    if request.param == "rsa":
        return rsa.generate_private_key(65537, 2048)
    return ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha384", "sha512"])
def test_sign_certificate(key: PrivateKey, hash_name: str) -> None:
    cert = sign_certificate(builder("CN=root", key), key, hash_name)
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == hash_name
    assert is_self_signed(cert)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_sign_certificate_rejects_unknown_hashes(key: PrivateKey) -> None:
    with pytest.raises(ValueError, match="unsupported hash"):
        sign_certificate(builder("CN=root", key), key, "md5")
    with pytest.raises(ValueError):
        check_hash_name("sha3-256")


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
def test_is_issued_by(key: PrivateKey, hash_name: str) -> None:
    root = sign_certificate(builder("CN=root", key), key, hash_name)
    other_key = ec.generate_private_key(ec.SECP256R1())
    child = sign_certificate(builder("CN=child", other_key, "CN=root"), key, hash_name)
    forged = sign_certificate(builder("CN=child", other_key, "CN=root"), other_key, hash_name)
    assert is_issued_by(child, root)
    assert not is_issued_by(forged, root)
    assert not is_issued_by(root, child)
    assert not is_self_signed(child)


def test_ca_hash() -> None:
    assert isinstance(ca_hash(ec.generate_private_key(ec.SECP384R1())), hashes.SHA384)
    assert isinstance(ca_hash(ec.generate_private_key(ec.SECP521R1())), hashes.SHA512)
    assert isinstance(ca_hash(ec.generate_private_key(ec.SECP256R1())), hashes.SHA256)
