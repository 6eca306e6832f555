"""A validator that confirms nothing (``confirms_issuance`` False, as ``static``) has a new transaction
decided and stored in one step: the same answers, audit strings and invariants as the claimed path."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import text

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.policy import IssuancePolicy
from scep_server.config import ProfileConfig
from scep_server.errors import FailInfo, StoreUnavailable
from scep_server.scep import client
from scep_server.scep.message import DecodeOptions
from scep_server.scep.types import DigestAlgorithm, KeyTransport, PKIStatus
from scep_server.service.enrollment import EnrollmentService
from scep_server.service.issuance import IssuanceService
from scep_server.service.outcome import OperationStatus, Outcome
from scep_server.service.profile import Profile
from scep_server.service.publishing import CrlCache
from scep_server.store import CertStatus, Store, TransactionRecord, TransactionState
from scep_server.web.errors import handle

from .conftest import Applicant, RecordingValidator, applicant, make_profile

SUPERSEDED = 4


@pytest.fixture
def validator() -> RecordingValidator:
    return RecordingValidator(confirms_issuance=False)


@pytest.fixture
def service(
    ca: CertificateAuthority, store: Store, validator: RecordingValidator, crls: CrlCache, issuance: IssuanceService,
) -> EnrollmentService:
    return EnrollmentService(ca, store, {"unit": make_profile(validator)}, crls, issuance)


@dataclass(frozen=True)
class Device:
    """An applicant with the one self-signed signer it keeps across its retries."""

    applicant: Applicant
    signer: x509.Certificate

    @property
    def key(self) -> rsa.RSAPrivateKey:
        return self.applicant.key

    def csr(self, challenge: str = "unit-challenge") -> x509.CertificateSigningRequest:
        return self.applicant.csr(challenge)


def _device(name: str) -> Device:
    made = applicant(name)
    return Device(made, made.signer)


def _enroll(service: EnrollmentService, device: Device, challenge: str = "unit-challenge",
            ) -> tuple[client.BuiltRequest, Outcome]:
    built = client.build_pkcsreq(device.csr(challenge), signer_cert=device.signer, signer_key=device.key,
                                 recipient=service.ca.ra_cert)
    return built, service.pki_operation(service.profiles["unit"], built.der, "192.0.2.7")


def _certificate(service: EnrollmentService, built: client.BuiltRequest, outcome: Outcome,
                 device: Device) -> x509.Certificate:
    reply = client.parse_cert_rep(outcome.reply, request=built, signer_key=device.key, signer_cert=device.signer,
                                  trusted_signers=[service.ca.ra_cert])
    assert reply.status is PKIStatus.SUCCESS
    return reply.certificate_for(device.key.public_key())


def _transaction(store: Store, built: client.BuiltRequest) -> TransactionRecord:
    record = store.get_transaction("unit", built.transaction_id)
    assert record is not None
    return record


def test_a_new_transaction_is_issued_stored_and_audited_once(
    service: EnrollmentService, store: Store, validator: RecordingValidator
) -> None:
    device = _device("at-once")
    built, outcome = _enroll(service, device)
    issued = _certificate(service, built, outcome, device)
    assert (outcome.status, outcome.issued, outcome.detail) == (
        OperationStatus.SUCCESS, True, f"issued {issued.serial_number:x}")
    record = _transaction(store, built)
    assert (record.state, record.serial) == (TransactionState.ISSUED, issued.serial_number)
    stored = store.get_certificate(issued.serial_number, service.ca.issuer_name)
    assert stored is not None and stored.status is CertStatus.VALID and stored.transaction_id == built.transaction_id
    assert [e.outcome for e in store.list_operations(transaction_id=built.transaction_id)] == ["SUCCESS"]
    assert validator.validated == [built.transaction_id]


def test_a_retry_gets_the_stored_certificate(service: EnrollmentService, store: Store) -> None:
    device = _device("at-once-retry")
    built, first = _enroll(service, device)
    again = service.pki_operation(service.profiles["unit"], built.der, "192.0.2.7")
    issued = _certificate(service, built, first, device)
    assert (again.status, again.issued, again.detail) == (
        OperationStatus.SUCCESS, False, f"re-sent {issued.serial_number:x}")
    assert _certificate(service, built, again, device).serial_number == issued.serial_number
    assert [e.outcome for e in reversed(store.list_operations(transaction_id=built.transaction_id))] == [
        "SUCCESS", "SUCCESS"]


def test_a_refusal_is_recorded_as_on_the_claimed_path(service: EnrollmentService, store: Store) -> None:
    device = _device("at-once-refused")
    built, outcome = _enroll(service, device, challenge="wrong")
    assert outcome.status is OperationStatus.FAILURE_BAD_REQUEST and not outcome.issued
    record = _transaction(store, built)
    assert (record.state, record.serial) == (TransactionState.FAILED, None)
    assert [e.outcome for e in store.list_operations(transaction_id=built.transaction_id)] == ["FAILURE:BAD_REQUEST"]
    assert store.list_certificates(limit=10) == []


def test_a_failed_transaction_asked_again_is_issued_by_the_claimed_path(
    service: EnrollmentService, store: Store
) -> None:
    device = _device("at-once-second-try")
    csr = device.csr("wrong")
    refused = client.build_pkcsreq(csr, signer_cert=device.signer, signer_key=device.key, recipient=service.ca.ra_cert)
    service.pki_operation(service.profiles["unit"], refused.der, None)
    right = client.build_pkcsreq(device.csr(), signer_cert=device.signer, signer_key=device.key,
                                 recipient=service.ca.ra_cert, transaction_id=refused.transaction_id)
    outcome = service.pki_operation(service.profiles["unit"], right.der, None)
    issued = _certificate(service, right, outcome, device)
    assert _transaction(store, right).serial == issued.serial_number


def test_a_concurrent_request_stored_first_wins_and_the_loser_certificate_is_withdrawn(
    service: EnrollmentService, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = _device("at-once-race")
    built, first = _enroll(service, device)
    winner = _certificate(service, built, first, device)
    # The second request looks before the first is stored, and writes after it was.
    looked_up, calls = store.transaction_exists, []

    def first_sees_nothing(profile: str, transaction_id: str) -> bool:
        calls.append(transaction_id)
        return len(calls) > 1 and looked_up(profile, transaction_id)

    monkeypatch.setattr(store, "transaction_exists", first_sees_nothing)
    again = service.pki_operation(service.profiles["unit"], built.der, "192.0.2.7")
    assert _certificate(service, built, again, device).serial_number == winner.serial_number
    assert not again.issued
    stored = {c.serial: c for c in store.list_certificates(limit=10)}
    assert len(stored) == 2
    loser = next(c for serial, c in stored.items() if serial != winner.serial_number)
    assert (loser.status, loser.revocation_reason) == (CertStatus.REVOKED, SUPERSEDED)
    assert stored[winner.serial_number].status is CertStatus.VALID


def test_a_validator_that_confirms_issuance_takes_the_claimed_path(
    service: EnrollmentService, store: Store, validator: RecordingValidator
) -> None:
    validator.confirms_issuance = True
    device = _device("claimed")
    built, outcome = _enroll(service, device)
    assert validator.issued == [_certificate(service, built, outcome, device).serial_number]


def _small_key_service(ca: CertificateAuthority, store: Store, validator: RecordingValidator, crls: CrlCache,
                       issuance: IssuanceService) -> EnrollmentService:
    config = ProfileConfig(name="unit", min_rsa_bits=1024)
    policy = IssuancePolicy.from_profile(config, crl_url=None, ca_issuers_url=None)
    profile = Profile("unit", validator, policy, DecodeOptions(), allow_renewal=True)
    return EnrollmentService(ca, store, {"unit": profile}, crls, issuance)


def test_a_reply_that_cannot_be_built_fails_the_request_with_nothing_stored(
    ca: CertificateAuthority, store: Store, validator: RecordingValidator, crls: CrlCache, issuance: IssuanceService,
) -> None:
    service = _small_key_service(ca, store, validator, crls, issuance)
    made = Applicant(rsa.generate_private_key(public_exponent=65537, key_size=1024),
                     x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "small-key")]))
    device = Device(made, made.signer)
    # RSAES-OAEP with SHA-512 cannot wrap a content key for a 1024-bit modulus: no reply can reach it.
    built = client.build_pkcsreq(device.csr(), signer_cert=device.signer, signer_key=device.key,
                                 recipient=ca.ra_cert, key_transport=KeyTransport.oaep(DigestAlgorithm.SHA512))
    outcome = service.pki_operation(service.profiles["unit"], built.der, "192.0.2.7")
    reply = client.parse_cert_rep(outcome.reply, request=built, signer_key=device.key, signer_cert=device.signer,
                                  trusted_signers=[ca.ra_cert])
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_ALG)
    assert (outcome.status, outcome.issued) == (OperationStatus.FAILURE_BAD_ALG, False)
    assert store.get_transaction("unit", built.transaction_id) is None
    assert store.list_certificates(limit=10) == []
    assert [e.outcome for e in store.list_operations(transaction_id=built.transaction_id)] == ["FAILURE:BAD_ALG"]
    # Nothing stands in the way of the same transaction asked with a key transport the key can take.
    plain = client.build_pkcsreq(device.csr(), signer_cert=device.signer, signer_key=device.key,
                                 recipient=ca.ra_cert, transaction_id=built.transaction_id)
    issued = _certificate(service, plain, service.pki_operation(service.profiles["unit"], plain.der, None), device)
    assert _transaction(store, plain).serial == issued.serial_number


FAILING_AUDIT = "CREATE TRIGGER failing_audit BEFORE INSERT ON scep_events BEGIN INSERT INTO gone VALUES (1); END"


def test_an_enrollment_the_store_fails_to_record_is_not_handed_out_and_is_issued_afresh_on_retry(
    service: EnrollmentService, store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    device = _device("store-fails")
    built = client.build_pkcsreq(device.csr(), signer_cert=device.signer, signer_key=device.key,
                                 recipient=service.ca.ra_cert)
    with store.engine.begin() as conn:  # the audit insert, the last of the enrollment's, fails in the database
        conn.execute(text(FAILING_AUDIT))
    with pytest.raises(StoreUnavailable) as raised:
        service.pki_operation(service.profiles["unit"], built.der, "192.0.2.7")
    answer = handle(raised.value)
    assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
    assert store.get_transaction("unit", built.transaction_id) is None  # the certificate and transaction
    assert store.list_certificates(limit=10) == []  # inserted before it were rolled back with it
    assert "could not be stored" in caplog.text and "not handed out" in caplog.text
    with store.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER failing_audit"))
    again = service.pki_operation(service.profiles["unit"], built.der, "192.0.2.7")
    issued = _certificate(service, built, again, device)
    assert (again.issued, _transaction(store, built).serial) == (True, issued.serial_number)
    assert [c.serial for c in store.list_certificates(limit=10)] == [issued.serial_number]
    assert [e.outcome for e in store.list_operations(transaction_id=built.transaction_id)] == ["SUCCESS"]


def _renewal(service: EnrollmentService, device: Device, current: x509.Certificate,
             challenge: str | None) -> tuple[client.BuiltRequest, Outcome]:
    built = client.build_pkcsreq(device.applicant.csr(challenge), signer_cert=current, signer_key=device.key,
                                 recipient=service.ca.ra_cert, renewal=True, transaction_id=f"renew-{challenge}")
    return built, service.pki_operation(service.profiles["unit"], built.der, "192.0.2.7")


def test_a_renewal_the_validator_does_not_see_is_issued_at_once(
    service: EnrollmentService, store: Store, validator: RecordingValidator
) -> None:
    device = _device("renewed-at-once")
    first, outcome = _enroll(service, device)
    current = _certificate(service, first, outcome, device)
    built, renewed = _renewal(service, device, current, challenge=None)
    assert (renewed.status, renewed.issued, renewed.audited) == (OperationStatus.SUCCESS, True, True)
    assert validator.validated == [first.transaction_id]  # the renewal was vouched for by its signer
    record = _transaction(store, built)
    assert record.state is TransactionState.ISSUED
    reply = client.parse_cert_rep(renewed.reply, request=built, signer_key=device.key, signer_cert=current,
                                  trusted_signers=[service.ca.ra_cert])
    assert reply.certificate_for(device.key.public_key()).serial_number == record.serial
    assert [e.outcome for e in store.list_operations(transaction_id=built.transaction_id)] == ["SUCCESS"]


def test_a_renewal_the_validator_sees_is_refused_without_its_challenge(
    service: EnrollmentService, store: Store, validator: RecordingValidator
) -> None:
    validator.validates_renewals = True
    device = _device("renewal-validated")
    first, outcome = _enroll(service, device)
    current = _certificate(service, first, outcome, device)
    built, refused = _renewal(service, device, current, challenge=None)
    assert refused.status is OperationStatus.FAILURE_BAD_REQUEST
    assert built.transaction_id in validator.validated
    assert _transaction(store, built).state is TransactionState.FAILED


def test_on_the_claimed_path_too_a_reply_that_cannot_be_built_is_refused_before_validation(
    ca: CertificateAuthority, store: Store, validator: RecordingValidator, crls: CrlCache, issuance: IssuanceService,
) -> None:
    validator.confirms_issuance = True  # as Intune: validated, stored, then acknowledged
    service = _small_key_service(ca, store, validator, crls, issuance)
    made = Applicant(rsa.generate_private_key(public_exponent=65537, key_size=1024),
                     x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "small-key-claimed")]))
    device = Device(made, made.signer)
    built = client.build_pkcsreq(device.csr(), signer_cert=device.signer, signer_key=device.key,
                                 recipient=ca.ra_cert, key_transport=KeyTransport.oaep(DigestAlgorithm.SHA512))
    outcome = service.pki_operation(service.profiles["unit"], built.der, "192.0.2.8")
    assert (outcome.status, outcome.issued) == (OperationStatus.FAILURE_BAD_ALG, False)
    assert (validator.validated, validator.issued) == ([], [])
    assert store.get_transaction("unit", built.transaction_id) is None
    assert store.list_certificates(limit=10) == []
