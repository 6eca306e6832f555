"""CSRs and a certificate for the validators, and an isolated registry for tests that register validators."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

import scep_server.challenge as challenge
import scep_server.config.sections as sections
from scep_server.challenge import ValidationRequest
from tests.support import pki

KEY = ec.generate_private_key(ec.SECP256R1())
MakeRequest = Callable[..., ValidationRequest]


@pytest.fixture
def make_request() -> MakeRequest:
    def make(password: bytes | None = None, *, transaction_id: str = "tx-1") -> ValidationRequest:
        csr = pki.csr(KEY, "device-1", challenge=password)
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
    now = datetime.now(UTC)
    return pki.self_signed("Corp CA", KEY, serial=1, not_before=now, not_after=now + timedelta(days=1))
