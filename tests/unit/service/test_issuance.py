"""IssuanceService on its own: validate → sign → store → notify → complete, and every way out of it."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scep_server.challenge import ValidationRequest
from scep_server.errors import ChallengeRejected, FailInfo, RetryLater
from scep_server.pki.reasons import CRLReason
from scep_server.service.issuance import ABANDONED_AFTER, E_FAIL, Deferred, IssuanceService
from scep_server.store import CertStatus, Store, TransactionRecord, TransactionState

from .conftest import Applicant, CountingCache, RecordingValidator, applicant, make_profile


def _claim(store: Store, csr: x509.CertificateSigningRequest, transaction_id: str) -> tuple[ValidationRequest,
                                                                                             TransactionRecord]:
    der = csr.public_bytes(Encoding.DER)
    record, claimed = store.claim_transaction(
        profile="unit", transaction_id=transaction_id, message_type=19, csr_der=der, requester_ip="192.0.2.1",
    )
    assert claimed
    return ValidationRequest("unit", transaction_id, csr, der, "192.0.2.1"), record


def _state(store: Store, transaction_id: str) -> TransactionState:
    record = store.get_transaction("unit", transaction_id)
    assert record is not None
    return record.state


def test_a_validated_request_is_issued_stored_acknowledged_and_completed(
    issuance: IssuanceService, store: Store, validator: RecordingValidator, ca: object,
) -> None:
    device: Applicant = applicant("issued-1")
    validation, record = _claim(store, device.csr(), "tx-issue")
    certificate = issuance.decide(make_profile(validator), validation, record, renewal=False)
    assert isinstance(certificate, x509.Certificate)
    assert certificate.subject == device.subject
    stored = store.get_certificate(certificate.serial_number)
    assert stored is not None and stored.status is CertStatus.VALID and stored.transaction_id == "tx-issue"
    assert validator.validated == ["tx-issue"] and validator.issued == [certificate.serial_number]
    done = store.get_transaction("unit", "tx-issue")
    assert done is not None and done.state is TransactionState.ISSUED and done.serial == certificate.serial_number
    assert done.csr_sha256 == hashlib.sha256(validation.csr_der).hexdigest()


def test_a_refused_challenge_fails_the_transaction_and_signs_nothing(
    issuance: IssuanceService, store: Store, validator: RecordingValidator,
) -> None:
    validation, record = _claim(store, applicant("refused").csr(challenge="wrong"), "tx-refuse")
    with pytest.raises(ChallengeRejected):
        issuance.decide(make_profile(validator), validation, record, renewal=False)
    failed = store.get_transaction("unit", "tx-refuse")
    assert failed is not None and failed.state is TransactionState.FAILED
    assert failed.fail_info == FailInfo.BAD_REQUEST and failed.fail_reason == "wrong challenge"
    assert store.count_certificates() == 0 and validator.issued == []


def test_an_unavailable_validator_defers_where_the_profile_says_so(
    issuance: IssuanceService, store: Store, validator: RecordingValidator,
) -> None:
    validator.unavailable = True
    validation, record = _claim(store, applicant("deferred").csr(), "tx-defer")
    result = issuance.decide(make_profile(validator, defer_when_unavailable=True), validation, record, renewal=False)
    assert result == Deferred("validator unreachable")
    deferred = store.get_transaction("unit", "tx-defer")
    assert deferred is not None and deferred.state is TransactionState.PENDING and deferred.deferred
    assert store.count_certificates() == 0


def test_an_unavailable_validator_is_a_retry_later_refusal_otherwise(
    issuance: IssuanceService, store: Store, validator: RecordingValidator,
) -> None:
    validator.unavailable = True
    validation, record = _claim(store, applicant("no-defer").csr(), "tx-retry")
    with pytest.raises(RetryLater):
        issuance.decide(make_profile(validator), validation, record, renewal=False)
    assert _state(store, "tx-retry") is TransactionState.FAILED


def test_an_unacknowledged_issuance_is_revoked_through_the_revocation_service(
    issuance: IssuanceService, store: Store, validator: RecordingValidator, cache: CountingCache,
) -> None:
    validator.refuse_acknowledgement = True
    validation, record = _claim(store, applicant("unacknowledged").csr(), "tx-withdraw")
    with pytest.raises(RetryLater):
        issuance.decide(make_profile(validator), validation, record, renewal=False)
    [withdrawn] = store.list_certificates()
    assert withdrawn.status is CertStatus.REVOKED
    assert withdrawn.revocation_reason == CRLReason.CESSATION_OF_OPERATION
    assert cache.invalidations == 1  # the CRL and OCSP caches were told, as for any revocation
    assert validator.failed == [("tx-withdraw", E_FAIL)]
    assert _state(store, "tx-withdraw") is TransactionState.FAILED


def test_a_stored_certificate_never_collected_is_withdrawn_through_the_revocation_service(
    issuance: IssuanceService, store: Store, validator: RecordingValidator, cache: CountingCache,
) -> None:
    profile = make_profile(validator)
    validation, _ = _claim(store, applicant("abandoned").csr(), "tx-abandon")
    certificate = issuance._build(profile, validation)  # a handler that stored it, then died
    issuance._store_undelivered(profile, validation, certificate)
    assert issuance.withdraw_abandoned({"unit": profile}) == 0  # its handler may still be at work
    later = datetime.now(UTC) + ABANDONED_AFTER + timedelta(minutes=1)
    assert issuance.withdraw_abandoned({"unit": profile}, now=later) == 1
    revoked = store.get_certificate(certificate.serial_number)
    assert revoked is not None and revoked.status is CertStatus.REVOKED
    assert cache.invalidations == 1
    assert validator.failed == [("tx-abandon", E_FAIL)]


def test_a_reclaimed_transaction_redelivers_the_stored_certificate(
    issuance: IssuanceService, store: Store, validator: RecordingValidator,
) -> None:
    profile = make_profile(validator)
    validation, _ = _claim(store, applicant("redelivered").csr(), "tx-again")
    certificate = issuance._build(profile, validation)
    issuance._store_undelivered(profile, validation, certificate)
    record = store.get_transaction("unit", "tx-again")
    assert record is not None and record.serial == certificate.serial_number
    again = issuance.decide(profile, validation, record, renewal=False)
    assert again == certificate and store.count_certificates() == 1
    assert validator.validated == [] and validator.issued == [certificate.serial_number]
    assert _state(store, "tx-again") is TransactionState.ISSUED
