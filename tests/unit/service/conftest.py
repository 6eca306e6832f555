"""The use cases built in-process with their real collaborators: a CA on disk, a SQLite store, and a
validator double that records what it was told. No sockets, no HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from scep_server.ca.authority import CertificateAuthority, init_ca
from scep_server.ca.policy import IssuancePolicy
from scep_server.challenge import IssuedCertificate, ValidationRequest, challenge_password
from scep_server.config import CAConfig, ProfileConfig
from scep_server.errors import ChallengeRejected, ValidatorUnavailable
from scep_server.scep.client import build_csr, self_signed_signer
from scep_server.scep.message import DecodeOptions
from scep_server.service.issuance import IssuanceService
from scep_server.service.profile import Profile
from scep_server.service.publishing import CrlCache
from scep_server.service.revocation import RevocationService
from scep_server.store import Store

CHALLENGE = "unit-challenge"


@dataclass
class RecordingValidator:
    """A challenge validator that accepts ``CHALLENGE``, or fails the way a test sets up."""

    name: str = "recording"
    validates_renewals: bool = False
    confirms_issuance: bool = True  # False: new transactions are issued in one step
    unavailable: bool = False  # validate() raises ValidatorUnavailable
    refuse_acknowledgement: bool = False  # notify_issued() raises ValidatorUnavailable
    validated: list[str] = field(default_factory=list)
    issued: list[int] = field(default_factory=list)
    failed: list[tuple[str, int]] = field(default_factory=list)

    def validate(self, request: ValidationRequest) -> None:
        self.validated.append(request.transaction_id)
        if self.unavailable:
            raise ValidatorUnavailable("validator unreachable", retry_after=1)
        if challenge_password(request.csr) != CHALLENGE:
            raise ChallengeRejected("wrong challenge", reason="ChallengeMismatch")

    def notify_issued(self, request: ValidationRequest, issued: IssuedCertificate) -> None:
        if self.refuse_acknowledgement:
            raise ValidatorUnavailable("the acknowledgement was lost")
        self.issued.append(issued.certificate.serial_number)

    def notify_failed(self, request: ValidationRequest, hresult: int, description: str) -> None:
        self.failed.append((request.transaction_id, hresult))


@dataclass
class CountingCache:
    """A revocation cache that counts how often it was told to forget."""

    invalidations: int = 0

    def invalidate(self) -> None:
        self.invalidations += 1


@dataclass(frozen=True)
class Applicant:
    """A device: its key, its throw-away signer, and the CSR it sends."""

    key: rsa.RSAPrivateKey
    subject: x509.Name

    @property
    def signer(self) -> x509.Certificate:
        return self_signed_signer(self.key, self.subject)

    def csr(self, challenge: str | None = CHALLENGE) -> x509.CertificateSigningRequest:
        return build_csr(self.key, self.subject, challenge_password=challenge)


_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def applicant(common_name: str = "device-1") -> Applicant:
    return Applicant(_KEY, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    config = CAConfig(name="unit-ca", subject="CN=Unit Test CA", key_size=2048)
    return init_ca(tmp_path_factory.mktemp("ca") / "ca", config, None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    opened.migrate()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def validator() -> RecordingValidator:
    return RecordingValidator()


@pytest.fixture
def cache() -> CountingCache:
    return CountingCache()


@pytest.fixture
def revocations(ca: CertificateAuthority, store: Store, cache: CountingCache) -> RevocationService:
    return RevocationService(store, issuer=ca.issuer_name, caches=[cache])


@pytest.fixture
def issuance(ca: CertificateAuthority, store: Store, revocations: RevocationService) -> IssuanceService:
    return IssuanceService(ca, store, revocations)


@pytest.fixture
def crls(ca: CertificateAuthority, store: Store) -> CrlCache:
    return CrlCache(ca, store, validity=timedelta(hours=24), refresh=timedelta(hours=1))


def make_profile(validator: RecordingValidator, **fields: object) -> Profile:
    config = ProfileConfig(name="unit")
    policy = IssuancePolicy.from_profile(config, crl_url=None, ca_issuers_url=None)
    return Profile("unit", validator, policy, DecodeOptions(), allow_renewal=True, **fields)  # type: ignore[arg-type]
