"""The revocation poll before a reissue: a PKCSReq for a subject or device that holds a valid certificate waits,
boundedly, for one revocation round that started after it, shared with concurrent requests; never failing it."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import AttributeOID, NameOID

from scep_server.ca.authority import CertificateAuthority
from scep_server.config.model import DeviceIdConfig
from scep_server.errors import StoreUnavailable
from scep_server.scep import client
from scep_server.service.enrollment import EnrollmentService
from scep_server.service.issuance import IssuanceService
from scep_server.service.outcome import OperationStatus, Outcome
from scep_server.service.publishing import CrlCache
from scep_server.service.reissue_poll import ReissuePoll, SharedRounds
from scep_server.store import CertStatus, Store

from .conftest import _KEY, CHALLENGE, RecordingValidator, make_profile


class Rounds:
    """The revocation round: records how many validations had happened when each round ran."""

    def __init__(self, validator: RecordingValidator, *, delay: float = 0.0, fail: bool = False) -> None:
        self.validator = validator
        self.delay = delay
        self.fail = fail
        self.ran: list[int] = []

    def run(self) -> None:
        self.ran.append(len(self.validator.validated))
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("Intune is down")


def _csr(common_name: str, device_id: str | None = None) -> x509.CertificateSigningRequest:
    builder = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .add_attribute(AttributeOID.CHALLENGE_PASSWORD, CHALLENGE.encode()))
    if device_id is not None:
        uri = x509.UniformResourceIdentifier(f"IntuneDeviceId://{device_id}")
        builder = builder.add_extension(x509.SubjectAlternativeName([uri]), critical=False)
    return builder.sign(_KEY, hashes.SHA256())


def _service(ca: CertificateAuthority, store: Store, validator: RecordingValidator, crls: CrlCache,
             issuance: IssuanceService, rounds: Rounds, *, wait: float = 2.0) -> EnrollmentService:
    poll = ReissuePoll(store.devices, SharedRounds(rounds.run), wait=wait, profiles=["unit"],
                       device_ids={"unit": DeviceIdConfig()})
    return EnrollmentService(ca, store, {"unit": make_profile(validator)}, crls, issuance, reissue_poll=poll)


def _enroll(service: EnrollmentService, csr: x509.CertificateSigningRequest) -> Outcome:
    signer = client.self_signed_signer(_KEY, csr.subject)
    built = client.build_pkcsreq(csr, signer_cert=signer, signer_key=_KEY, recipient=service.ca.ra_cert,
                                 transaction_id=uuid.uuid4().hex.upper())  # one key, a new transaction each
    return service.pki_operation(service.profiles["unit"], built.der, "192.0.2.7")


@pytest.fixture
def rounds(validator: RecordingValidator) -> Rounds:
    return Rounds(validator)


def test_a_reissue_for_the_same_subject_waits_for_a_round_first(
    ca: CertificateAuthority, store: Store, validator: RecordingValidator, crls: CrlCache,
    issuance: IssuanceService, rounds: Rounds,
) -> None:
    service = _service(ca, store, validator, crls, issuance, rounds)
    assert _enroll(service, _csr("reissued")).issued
    assert rounds.ran == []  # nothing held a valid certificate: no round
    assert _enroll(service, _csr("reissued")).issued
    assert rounds.ran == [1]  # before the second request was validated
    assert _enroll(service, _csr("someone-else")).issued
    assert rounds.ran == [1]


def test_a_reissue_for_the_same_device_waits_too(
    ca: CertificateAuthority, store: Store, validator: RecordingValidator, crls: CrlCache,
    issuance: IssuanceService, rounds: Rounds,
) -> None:
    service = _service(ca, store, validator, crls, issuance, rounds)
    device_id = str(uuid.uuid4())
    first = _enroll(service, _csr("laptop", device_id))
    [stored] = store.list_certificates(status=CertStatus.VALID)
    assert first.issued and stored.device_id == device_id and stored.device_id_kind == "intune"
    assert _enroll(service, _csr("laptop-renamed", device_id.upper())).issued
    assert rounds.ran == [1]


def test_a_revoked_certificate_does_not_call_for_a_round(
    ca: CertificateAuthority, store: Store, validator: RecordingValidator, crls: CrlCache,
    issuance: IssuanceService, rounds: Rounds,
) -> None:
    service = _service(ca, store, validator, crls, issuance, rounds)
    _enroll(service, _csr("revoked-before"))
    [stored] = store.list_certificates()
    issuance.revocations.revoke(stored.serial, reason="superseded")
    _enroll(service, _csr("revoked-before"))
    assert rounds.ran == []


@pytest.mark.parametrize("slow_or_failing", ["slow", "failing"])
def test_a_slow_or_failing_round_never_fails_the_enrollment(
    ca: CertificateAuthority, store: Store, validator: RecordingValidator, crls: CrlCache,
    issuance: IssuanceService, slow_or_failing: str, caplog: pytest.LogCaptureFixture,
) -> None:
    rounds = Rounds(validator, delay=2.0 if slow_or_failing == "slow" else 0.0, fail=slow_or_failing == "failing")
    service = _service(ca, store, validator, crls, issuance, rounds, wait=0.3)
    _enroll(service, _csr("patient"))
    started = time.monotonic()
    outcome = _enroll(service, _csr("patient"))
    assert outcome.status is OperationStatus.SUCCESS and outcome.issued
    assert time.monotonic() - started < 1.5  # the round was not waited for beyond the bound
    assert rounds.ran == [1]
    if slow_or_failing == "slow":
        assert "took longer than 0.3 s" in caplog.text
    else:
        assert "Intune is down" in caplog.text


class BrokenStore:
    def holds_valid_certificate(self, *, subject: str | None, device_id: str | None, now: datetime) -> bool:
        raise StoreUnavailable("the database is gone")


def test_a_store_failure_lets_the_request_go_on(
    validator: RecordingValidator, caplog: pytest.LogCaptureFixture
) -> None:
    rounds = Rounds(validator)
    poll = ReissuePoll(BrokenStore(), SharedRounds(rounds.run), wait=1.0, profiles=["unit"], device_ids={})
    assert poll.before_issuing("unit", _csr("anyone")) is False
    assert rounds.ran == [] and "the database is gone" in caplog.text


def test_other_profiles_and_a_zero_wait_never_poll(store: Store, validator: RecordingValidator) -> None:
    rounds = Rounds(validator)

    class Holding:
        def holds_valid_certificate(self, *, subject: str | None, device_id: str | None, now: datetime) -> bool:
            return True

    assert not ReissuePoll(Holding(), SharedRounds(rounds.run), wait=1.0, profiles=["intune"],
                           device_ids={}).before_issuing("static", _csr("x"))
    assert not ReissuePoll(Holding(), SharedRounds(rounds.run), wait=0.0, profiles=["intune"],
                           device_ids={}).before_issuing("intune", _csr("x"))
    assert ReissuePoll(Holding(), SharedRounds(rounds.run), wait=1.0, profiles=["intune"],
                       device_ids={}).before_issuing("intune", _csr("x"))
    assert rounds.ran == [0]


def test_concurrent_requests_share_a_round_that_started_after_them() -> None:
    release = threading.Event()
    started: list[float] = []

    def run() -> None:
        started.append(time.monotonic())
        release.wait(5)

    shared = SharedRounds(run)
    first = threading.Thread(target=shared.fresh_round, args=(5,))
    first.start()
    while not started:
        time.sleep(0.01)
    arrived = time.monotonic()  # while the first round runs: these need the next one
    results: list[bool] = []
    waiters = [threading.Thread(target=lambda: results.append(shared.fresh_round(5))) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.1)
    release.set()
    for thread in (first, *waiters):
        thread.join(10)
    assert results == [True, True, True]
    assert len(started) == 2  # one more round, shared by the three, not three more
    assert started[1] >= arrived
