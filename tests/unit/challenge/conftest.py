"""CSRs and a certificate for the validators, and an isolated registry for tests that register validators."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AttributeOID, NameOID

import scep_server.challenge as challenge
import scep_server.config.sections as sections
from scep_server.challenge import ValidationRequest

KEY = ec.generate_private_key(ec.SECP256R1())
MakeRequest = Callable[..., ValidationRequest]


@pytest.fixture
def make_request() -> MakeRequest:
    def make(password: bytes | None = None, *, transaction_id: str = "tx-1") -> ValidationRequest:
        builder = x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-1")])
        )
        if password is not None:
            builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, password)
        csr = builder.sign(KEY, hashes.SHA256())
        return ValidationRequest("corp", transaction_id, csr, csr.public_bytes(Encoding.DER), "192.0.2.7")

    return make


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registrations made by the test are forgotten afterwards."""
    monkeypatch.setattr(challenge, "_VALIDATORS", dict(challenge._VALIDATORS))
    monkeypatch.setattr(sections, "_SECTIONS", dict(sections._SECTIONS))
    yield


@pytest.fixture(scope="session")
def certificate() -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Corp CA")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(KEY.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(KEY, hashes.SHA256())
    )
