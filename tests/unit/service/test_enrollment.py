"""EnrollmentService: each kind of pkiMessage reaches the use case of its type, and every answer is audited
with the same outcome strings as before (the audit column is not migrated)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_server.ca.authority import CertificateAuthority
from scep_server.errors import FailInfo
from scep_server.scep import client
from scep_server.scep.types import MessageType, PKIStatus
from scep_server.service.enrollment import EnrollmentService
from scep_server.service.issuance import IssuanceService
from scep_server.service.outcome import OperationStatus, Outcome
from scep_server.service.publishing import CrlCache
from scep_server.store import Store

from .conftest import Applicant, RecordingValidator, applicant, make_profile


@pytest.fixture
def service(
    ca: CertificateAuthority, store: Store, validator: RecordingValidator, crls: CrlCache, issuance: IssuanceService,
) -> EnrollmentService:
    return EnrollmentService(ca, store, {"unit": make_profile(validator)}, crls, issuance)


def _send(service: EnrollmentService, built: client.BuiltRequest) -> Outcome:
    return service.pki_operation(service.profiles["unit"], built.der, "192.0.2.7")


def _read(service: EnrollmentService, outcome: Outcome, built: client.BuiltRequest, device: Applicant,
          signer: x509.Certificate) -> client.CertRep:
    return client.parse_cert_rep(outcome.reply, request=built, signer_key=device.key, signer_cert=signer,
                                 trusted_signers=[service.ca.ra_cert])


def _enroll(service: EnrollmentService, device: Applicant, signer: x509.Certificate,
            challenge: str | None = "unit-challenge") -> tuple[client.BuiltRequest, Outcome]:
    built = client.build_pkcsreq(device.csr(challenge), signer_cert=signer, signer_key=device.key,
                                 recipient=service.ca.ra_cert)
    return built, _send(service, built)


def _audited(store: Store, transaction_id: str) -> list[str]:
    return [record.outcome for record in reversed(store.list_operations(transaction_id=transaction_id))]


def test_a_pkcsreq_is_enrolled_and_audited_as_success(service: EnrollmentService, store: Store) -> None:
    device = applicant("enrolled")
    signer = device.signer
    built, outcome = _enroll(service, device, signer)
    assert (outcome.status, outcome.message_type, outcome.issued) == (OperationStatus.SUCCESS, "PKCS_REQ", True)
    reply = _read(service, outcome, built, device, signer)
    issued = reply.certificate_for(device.key.public_key())
    assert outcome.detail == f"issued {issued.serial_number:x}"
    assert _audited(store, built.transaction_id) == ["SUCCESS"]


def test_a_retried_pkcsreq_gets_the_same_certificate(service: EnrollmentService) -> None:
    device = applicant("retried")
    signer = device.signer
    built, first = _enroll(service, device, signer)
    again = _send(service, built)
    issued = _read(service, first, built, device, signer).certificate_for(device.key.public_key())
    assert again.status is OperationStatus.SUCCESS and not again.issued
    assert again.detail == f"re-sent {issued.serial_number:x}"


def test_a_refused_pkcsreq_is_a_failure_with_its_fail_info(service: EnrollmentService, store: Store) -> None:
    device = applicant("refused")
    built, outcome = _enroll(service, device, device.signer, challenge="wrong")
    assert outcome.status is OperationStatus.FAILURE_BAD_REQUEST and not outcome.issued
    reply = _read(service, outcome, built, device, device.signer)
    assert (reply.status, reply.fail_info) == (PKIStatus.FAILURE, FailInfo.BAD_REQUEST)
    assert _audited(store, built.transaction_id) == ["FAILURE:BAD_REQUEST"]


def test_a_deferred_pkcsreq_is_pending(service: EnrollmentService, validator: RecordingValidator) -> None:
    validator.unavailable = True
    profile = make_profile(validator, defer_when_unavailable=True)
    device = applicant("pending")
    built = client.build_pkcsreq(device.csr(), signer_cert=device.signer, signer_key=device.key,
                                 recipient=service.ca.ra_cert)
    outcome = service.pki_operation(profile, built.der, None)
    assert outcome.status is OperationStatus.PENDING and outcome.detail == "validator unreachable"


Build = Callable[[EnrollmentService, Applicant, x509.Certificate, x509.Certificate, str], client.BuiltRequest]


def _cert_poll(service: EnrollmentService, device: Applicant, signer: x509.Certificate, _issued: x509.Certificate,
               transaction_id: str) -> client.BuiltRequest:
    return client.build_cert_poll(service.ca.ca_cert.subject, device.subject, transaction_id=transaction_id,
                                  signer_cert=signer, signer_key=device.key, recipient=service.ca.ra_cert)


def _get_cert(service: EnrollmentService, device: Applicant, signer: x509.Certificate, issued: x509.Certificate,
              _transaction_id: str) -> client.BuiltRequest:
    return client.build_get_cert(service.ca.ca_cert.subject, issued.serial_number, signer_cert=signer,
                                 signer_key=device.key, recipient=service.ca.ra_cert)


def _get_crl(service: EnrollmentService, device: Applicant, signer: x509.Certificate, issued: x509.Certificate,
             _transaction_id: str) -> client.BuiltRequest:
    return client.build_get_crl(service.ca.ca_cert.subject, issued.serial_number, signer_cert=signer,
                                signer_key=device.key, recipient=service.ca.ra_cert)


@pytest.mark.parametrize(
    ("build", "message_type", "detail"),
    [
        (_cert_poll, MessageType.CERT_POLL, "re-sent {serial:x}"),
        (_get_cert, MessageType.GET_CERT, "sent {serial:x}"),
        (_get_crl, MessageType.GET_CRL, "CRL"),
    ],
    ids=["CertPoll", "GetCert", "GetCRL"],
)
def test_each_request_kind_reaches_its_use_case(
    service: EnrollmentService, store: Store, build: Build, message_type: MessageType, detail: str,
) -> None:
    device = applicant(f"kind-{message_type.name}")
    signer = device.signer
    enrolled, first = _enroll(service, device, signer)
    issued = _read(service, first, enrolled, device, signer).certificate_for(device.key.public_key())
    built = build(service, device, signer, issued, enrolled.transaction_id)
    outcome = _send(service, built)
    assert (outcome.status, outcome.message_type) == (OperationStatus.SUCCESS, message_type.name)
    assert outcome.detail == detail.format(serial=issued.serial_number)
    reply = _read(service, outcome, built, device, signer)
    if message_type is MessageType.GET_CRL:
        assert reply.crls and reply.crls[0].issuer == service.ca.ca_cert.subject
    else:
        assert reply.certificate_for(device.key.public_key()) == issued


def test_a_poll_from_another_key_is_bad_cert_id(service: EnrollmentService) -> None:
    device, stranger = applicant("polled"), Applicant(_other_key(), applicant("polled").subject)
    enrolled, _ = _enroll(service, device, device.signer)
    built = _cert_poll(service, stranger, stranger.signer, service.ca.ca_cert, enrolled.transaction_id)
    assert _send(service, built).status is OperationStatus.FAILURE_BAD_CERT_ID


def test_an_exception_is_audited_with_its_type_and_raised(
    service: EnrollmentService, store: Store, validator: RecordingValidator, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(_request: object) -> None:
        raise RuntimeError("validator bug")

    monkeypatch.setattr(validator, "validate", broken)
    device = applicant("broken")
    built = client.build_pkcsreq(device.csr(), signer_cert=device.signer, signer_key=device.key,
                                 recipient=service.ca.ra_cert)
    with pytest.raises(RuntimeError):
        _send(service, built)
    assert _audited(store, built.transaction_id) == ["ERROR:RuntimeError"]


def _other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
