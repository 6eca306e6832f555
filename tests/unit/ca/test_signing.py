from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scep_server.ca.keys.local import LocalKey
from scep_server.ca.signing import check_hash_name, sign_certificate
from scep_server.pki.chain import is_self_signed
from tests.support.pki import certificate_builder

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def builder(subject: str, key: LocalKey, issuer: str | None = None) -> x509.CertificateBuilder:
    validity = {"not_before": NOW, "not_after": NOW + timedelta(days=1)}
    return certificate_builder(subject, key.public_key(), issuer, ca=True, **validity)


@pytest.fixture(scope="module", params=["rsa", "ec"])
def key(request: pytest.FixtureRequest) -> LocalKey:
    if request.param == "rsa":
        return LocalKey(rsa.generate_private_key(65537, 2048))
    return LocalKey(ec.generate_private_key(ec.SECP256R1()))


@pytest.mark.parametrize("hash_name", ["sha1", "sha256", "sha384", "sha512"])
def test_sign_certificate(key: LocalKey, hash_name: str) -> None:
    cert = sign_certificate(builder("CN=root", key), key, hash_name)
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == hash_name
    assert is_self_signed(cert)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_sha1_certificate_keeps_the_to_be_signed_content(key: LocalKey) -> None:
    sha1 = sign_certificate(builder("CN=root", key), key, "sha1")
    sha256 = sign_certificate(builder("CN=root", key), key, "sha256")
    assert sha1.subject == sha256.subject and list(sha1.extensions) == list(sha256.extensions)
    expected = "1.2.840.113549.1.1.5" if isinstance(key.public_key(), rsa.RSAPublicKey) else "1.2.840.10045.4.1"
    assert sha1.signature_algorithm_oid.dotted_string == expected


def test_sign_certificate_rejects_unknown_hashes(key: LocalKey) -> None:
    with pytest.raises(ValueError, match="unsupported hash"):
        sign_certificate(builder("CN=root", key), key, "md5")
    with pytest.raises(ValueError):
        check_hash_name("sha3-256")
