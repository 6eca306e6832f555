"""Issuer checks, SHA-1 signatures included (cryptography refuses to check those itself)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scep_server.ca.keys.local import LocalKey
from scep_server.ca.signing import sign_certificate
from scep_server.pki.chain import is_issued_by, is_self_signed, sha1_signature_valid
from tests.support.pki import certificate_builder

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _builder(subject: str, key: LocalKey, issuer: str | None = None) -> x509.CertificateBuilder:
    validity = {"not_before": NOW, "not_after": NOW + timedelta(days=1)}
    return certificate_builder(subject, key.public_key(), issuer, ca=True, **validity)


@pytest.fixture(scope="module", params=["rsa", "ec"])
def key(request: pytest.FixtureRequest) -> LocalKey:
    if request.param == "rsa":
        return LocalKey(rsa.generate_private_key(65537, 2048))
    return LocalKey(ec.generate_private_key(ec.SECP256R1()))


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
def test_is_issued_by(key: LocalKey, hash_name: str) -> None:
    root = sign_certificate(_builder("CN=root", key), key, hash_name)
    other_key = LocalKey(ec.generate_private_key(ec.SECP256R1()))
    child = sign_certificate(_builder("CN=child", other_key, "CN=root"), key, hash_name)
    forged = sign_certificate(_builder("CN=child", other_key, "CN=root"), other_key, hash_name)
    assert is_issued_by(child, root)
    assert not is_issued_by(forged, root)
    assert not is_issued_by(root, child)
    assert is_self_signed(root)
    assert not is_self_signed(child)


def test_the_issuer_name_must_match_too(key: LocalKey) -> None:
    root = sign_certificate(_builder("CN=root", key), key, "sha256")
    elsewhere = sign_certificate(_builder("CN=child", key, "CN=another root"), key, "sha256")
    assert not is_issued_by(elsewhere, root)


def test_sha1_signature_valid_checks_only_sha1(key: LocalKey) -> None:
    sha1 = sign_certificate(_builder("CN=root", key), key, "sha1")
    sha256 = sign_certificate(_builder("CN=root", key), key, "sha256")
    assert sha1_signature_valid(key.public_key(), sha1)
    assert not sha1_signature_valid(ec.generate_private_key(ec.SECP256R1()).public_key(), sha1)
    assert not sha1_signature_valid(key.public_key(), sha256)  # for cryptography to check, not this
