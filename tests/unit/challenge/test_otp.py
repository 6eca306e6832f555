"""The otp validator over a real store: a password is used once, by one transaction (which may be decided
again), only when its pattern matches; replicas on PostgreSQL racing for one password have one winner."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scep_server.challenge import Resources, ValidationRequest, build_validator
from scep_server.challenge.otp import OtpChallenge, OtpChallengeConfig, otp_hash, pattern_matches
from scep_server.config import ProfileConfig
from scep_server.errors import ChallengeRejected, ValidatorUnavailable
from scep_server.store import Actor, Store
from scep_server.store.otp import OtpRepository
from tests.support import pki
from tests.support.servers import postgres_database, postgres_url  # noqa: F401 (fixtures)

from .conftest import KEY

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
PASSWORD = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'scep-server.db'}") as opened:
        opened.migrate()
        yield opened


@pytest.fixture
def ledger(store: Store) -> OtpRepository:
    return OtpRepository(store.engine)


def _mint(ledger: OtpRepository, *, profile: str = "corp", pattern: str | None = None,
          expires_at: datetime = NOW + timedelta(hours=1), password: str = PASSWORD) -> None:
    ledger.add_otps(profile=profile, secret_hashes=[otp_hash(password)], subject_pattern=pattern,
                    expires_at=expires_at, actor=Actor("cli:operator", "cli"), ttl_seconds=3600)


def _request(password: str | None = PASSWORD, *, subject: str = "device-1", transaction_id: str = "tx-1",
             sans: tuple[x509.GeneralName, ...] = ()) -> ValidationRequest:
    csr = pki.csr(KEY, subject, challenge=password, sans=sans)
    return ValidationRequest("corp", transaction_id, csr, csr.public_bytes(Encoding.DER), "192.0.2.7")


def _validator(ledger: OtpRepository | None, now: datetime = NOW) -> OtpChallenge:
    return OtpChallenge("corp", ledger, clock=lambda: now)


def _reason(validator: OtpChallenge, request: ValidationRequest) -> str:
    with pytest.raises(ChallengeRejected) as refused:
        validator.validate(request)
    return refused.value.reason


def _uses(store: Store) -> list[str]:
    return [row.detail for row in store.list_audit() if row.action == "otp.use"]


def test_a_password_is_used_by_one_transaction_which_may_be_decided_again(
    store: Store, ledger: OtpRepository
) -> None:
    _mint(ledger)
    validator = _validator(ledger)
    validator.validate(_request(transaction_id="tx-1"))
    validator.validate(_request(transaction_id="tx-1"))  # the same enrollment, decided again
    assert _reason(validator, _request(transaction_id="tx-2")) == "OtpUsed"
    assert len(_uses(store)) == 1


@pytest.mark.parametrize(
    ("password", "minted", "reason"),
    [
        (None, {}, "ChallengePasswordMissing"),
        ("", {}, "ChallengePasswordMissing"),
        ("NOT" + PASSWORD[3:], {}, "OtpUnknown"),
        (PASSWORD, {"profile": "other"}, "OtpUnknown"),
        (PASSWORD, {"expires_at": NOW}, "OtpExpired"),
        (PASSWORD, {"pattern": "CN=kiosk-*"}, "OtpSubjectMismatch"),
    ],
)
def test_refusals_leave_the_password_unused(
    store: Store, ledger: OtpRepository, password: str | None, minted: dict[str, object], reason: str
) -> None:
    _mint(ledger, **minted)  # type: ignore[arg-type]
    assert _reason(_validator(ledger), _request(password)) == reason
    record = ledger.find_otp(otp_hash(PASSWORD))
    assert record is not None and record.used_at is None and _uses(store) == []


def test_a_pattern_is_checked_on_every_decision_of_the_transaction(ledger: OtpRepository) -> None:
    _mint(ledger, pattern="CN=kiosk-*")
    validator = _validator(ledger)
    validator.validate(_request(subject="kiosk-1"))
    assert _reason(validator, _request(subject="laptop-1")) == "OtpSubjectMismatch"  # same transaction id


def test_a_failed_issuance_gives_the_password_back_to_a_later_request(store: Store, ledger: OtpRepository) -> None:
    _mint(ledger)
    validator = _validator(ledger)
    failed = _request(transaction_id="tx-1")
    validator.validate(failed)
    validator.notify_failed(failed, 0x80070057, "the request breaks the profile's policy")
    validator.validate(_request(transaction_id="tx-2"))
    assert _reason(validator, _request(transaction_id="tx-3")) == "OtpUsed"
    assert [row.action for row in sorted(store.list_audit(), key=lambda row: row.id)][1:] == [
        "otp.use", "otp.release", "otp.use",
    ]


def test_without_a_ledger_nothing_is_decided() -> None:
    with pytest.raises(ValidatorUnavailable):
        _validator(None).validate(_request())


def test_a_store_that_fails_makes_the_validator_unavailable(tmp_path: Path) -> None:
    unmigrated = Store.open(f"sqlite:///{tmp_path / 'empty.db'}")  # no otp_challenges table
    try:
        with pytest.raises(ValidatorUnavailable, match="cannot be read"):
            _validator(OtpRepository(unmigrated.engine)).validate(_request())
    finally:
        unmigrated.close()


def test_built_from_its_section_over_the_process_ledger(ledger: OtpRepository) -> None:
    _mint(ledger)
    profile = ProfileConfig(name="corp", challenge=OtpChallengeConfig())
    validator = build_validator(profile, Resources((object(), ledger)))
    validator.validate(_request())
    assert ledger.find_otp(otp_hash(PASSWORD)) is not None
    assert not validator.confirms_issuance and not validator.validates_renewals


@pytest.mark.parametrize(
    ("pattern", "subject", "sans", "matches"),
    [
        ("CN=device-?,O=Corp", "CN=device-1,O=Corp", (), True),  # RFC 4514: most specific first
        ("O=Corp,CN=*", "CN=device-1,O=Corp", (), False),
        ("*.fleet.example", "", (x509.DNSName("pc-1.fleet.example"),), True),
        ("*@example.com", "", (x509.RFC822Name("user@example.com"),), True),
        ("192.0.2.*", "", (x509.IPAddress(ipaddress.ip_address("192.0.2.9")),), True),
        ("dns:*", "", (x509.DNSName("pc-1.fleet.example"),), False),  # the value, without its kind
        ("*.FLEET.example", "", (x509.DNSName("pc-1.fleet.example"),), False),  # case-sensitive
        ("CN=device-[0-9]", "CN=device-7", (), True),
        # Every name must match: the subject and each SAN, one of the alternatives each.
        ("*.fleet.example", "CN=x", (x509.DNSName("pc-1.fleet.example"),), False),
        ("CN=kiosk-*", "CN=kiosk-1", (x509.DNSName("dc01.corp.example"),), False),
        ("*.fleet.example", "", (x509.DNSName("pc-1.fleet.example"), x509.DNSName("dc01.corp.example")), False),
        ("CN=kiosk-*|*.kiosk.example", "CN=kiosk-1", (x509.DNSName("kiosk-1.kiosk.example"),), True),
        ("CN=kiosk-*|*.kiosk.example", "CN=kiosk-1", (x509.DNSName("kiosk-1.other.example"),), False),
        ("|", "CN=kiosk-1", (), False),  # no alternative at all matches nothing
    ],
)
def test_pattern_syntax(pattern: str, subject: str, sans: tuple[x509.GeneralName, ...], matches: bool) -> None:
    csr = pki.csr(KEY, x509.Name.from_rfc4514_string(subject), sans=sans)
    assert pattern_matches(pattern, csr) is matches


@pytest.fixture
def replicas(postgres_url: str) -> Iterator[tuple[Store, Store]]:  # noqa: F811 (the fixture imported above)
    with Store.open(postgres_url, pool_size=10) as first, Store.open(postgres_url, pool_size=10) as second:
        first.migrate()
        yield first, second


@pytest.mark.postgres
def test_two_replicas_racing_for_one_password_have_exactly_one_winner(replicas: tuple[Store, Store]) -> None:
    validators = [_validator(OtpRepository(replica.engine), datetime.now(UTC)) for replica in replicas]
    _mint(OtpRepository(replicas[0].engine), expires_at=datetime.now(UTC) + timedelta(hours=1))
    contenders = 20
    requests = [_request(transaction_id=f"tx-{n}") for n in range(contenders)]
    start = threading.Barrier(contenders)

    def race(n: int) -> str:
        start.wait()
        try:
            validators[n % 2].validate(requests[n])
        except ChallengeRejected as refused:
            return refused.reason
        return "accepted"

    with ThreadPoolExecutor(contenders) as pool:
        outcomes = list(pool.map(race, range(contenders)))
    assert outcomes.count("accepted") == 1
    assert set(outcomes) == {"accepted", "OtpUsed"}
    assert len(_uses(replicas[1])) == 1
