from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from scep_server.store import (
    AlreadyRevoked,
    CertificateNotFound,
    CertificateRecord,
    CertStatus,
    DuplicateCertificate,
    NewCertificate,
    Store,
    TransactionNotPending,
    TransactionState,
    serial_hex,
)
from scep_server.store.tables import certificates

Factory = Callable[..., NewCertificate]
ISSUER = "CN=Test CA,O=scep-server"
OTHER_ISSUER = "CN=Other CA"
MAX_SERIAL = (1 << 160) - 1


def _fields_match(record: CertificateRecord, new: NewCertificate) -> bool:
    return all(getattr(record, name) == getattr(new, name) for name in NewCertificate.__slots__)


def _claim(store: Store, transaction_id: str) -> None:
    store.claim_transaction(
        profile="default", transaction_id=transaction_id, message_type=19, csr_der=b"csr", requester_ip=None
    )


def test_record_issued_without_transaction_stores_a_valid_certificate(store: Store, make_certificate: Factory) -> None:
    new = make_certificate(0x1234)
    before = datetime.now(UTC)
    record = store.record_issued(profile="default", transaction_id=None, certificate=new)
    assert _fields_match(record, new)
    assert record.status is CertStatus.VALID
    assert record.revoked_at is None and record.revocation_reason is None
    assert record.issued_at.tzinfo is UTC and before <= record.issued_at <= datetime.now(UTC)
    assert store.get_certificate(0x1234, ISSUER) == record


def test_record_issued_marks_the_transaction_issued(store: Store, make_certificate: Factory) -> None:
    _claim(store, "tx-1")
    record = store.record_issued(
        profile="default", transaction_id="tx-1", certificate=make_certificate(42, transaction_id="tx-1")
    )
    transaction = store.get_transaction("default", "tx-1")
    assert transaction is not None
    assert transaction.state is TransactionState.ISSUED and transaction.serial == 42
    assert record.transaction_id == "tx-1"


def test_record_issued_stores_nothing_when_the_transaction_is_missing(store: Store, make_certificate: Factory) -> None:
    with pytest.raises(TransactionNotPending) as info:
        store.record_issued(profile="default", transaction_id="nope", certificate=make_certificate(5))
    assert info.value.state is None
    assert store.get_certificate(5) is None
    assert store.count_certificates() == 0


def test_record_issued_stores_nothing_when_the_transaction_failed(store: Store, make_certificate: Factory) -> None:
    _claim(store, "tx-1")
    store.record_failure(profile="default", transaction_id="tx-1", fail_info=2, reason="denied")
    with pytest.raises(TransactionNotPending) as info:
        store.record_issued(profile="default", transaction_id="tx-1", certificate=make_certificate(5))
    assert info.value.state is TransactionState.FAILED
    assert store.get_certificate(5) is None


def test_duplicate_serial_leaves_the_transaction_pending(store: Store, make_certificate: Factory) -> None:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(77))
    _claim(store, "tx-2")
    with pytest.raises(DuplicateCertificate) as info:
        store.record_issued(profile="default", transaction_id="tx-2", certificate=make_certificate(77))
    assert (info.value.serial, info.value.issuer) == (77, ISSUER)
    transaction = store.get_transaction("default", "tx-2")
    assert transaction is not None and transaction.state is TransactionState.PENDING and transaction.serial is None
    assert store.count_certificates() == 1


def test_the_same_serial_may_exist_under_two_issuers(store: Store, make_certificate: Factory) -> None:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(3))
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(3, issuer=OTHER_ISSUER))
    mine, theirs = store.get_certificate(3, ISSUER), store.get_certificate(3, OTHER_ISSUER)
    assert mine is not None and mine.issuer == ISSUER
    assert theirs is not None and theirs.issuer == OTHER_ISSUER
    newest = store.get_certificate(3)
    assert newest is not None and newest.issuer == OTHER_ISSUER
    assert store.get_certificate(3, "CN=Nobody") is None


@pytest.mark.parametrize("serial", [1, 0x0F, 0x00FF00, 1 << 63, (1 << 64) + 1, 1 << 159, MAX_SERIAL])
def test_serials_up_to_160_bits_round_trip(store: Store, make_certificate: Factory, serial: int) -> None:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(serial))
    record = store.get_certificate(serial, ISSUER)
    assert record is not None and record.serial == serial
    with store.engine.connect() as conn:
        stored = conn.execute(select(certificates.c.serial_hex)).scalar_one()
    assert stored == format(serial, "x")
    assert stored == stored.lower() and not stored.startswith("0") and len(stored) <= 40


@pytest.mark.parametrize("serial", [0, -1, 1 << 160])
def test_out_of_range_serials_are_refused(store: Store, make_certificate: Factory, serial: int) -> None:
    with pytest.raises(ValueError):
        store.record_issued(
            profile="default", transaction_id=None, certificate=replace(make_certificate(1), serial=serial)
        )
    with pytest.raises(ValueError):
        store.get_certificate(serial)
    assert store.count_certificates() == 0


def test_serial_hex_format() -> None:
    assert serial_hex(0xABCDEF) == "abcdef"
    assert serial_hex(MAX_SERIAL) == "f" * 40
    with pytest.raises(ValueError):
        serial_hex(True)


def test_datetimes_come_back_utc_aware(store: Store, make_certificate: Factory) -> None:
    plus_two = timezone(timedelta(hours=2))
    not_before = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=plus_two)
    not_after = datetime(2031, 1, 1, 12, 0, tzinfo=plus_two)
    store.record_issued(
        profile="default",
        transaction_id=None,
        certificate=make_certificate(1, not_before=not_before, not_after=not_after),
    )
    record = store.get_certificate(1, ISSUER)
    assert record is not None
    assert record.not_before.tzinfo is UTC and record.not_after.tzinfo is UTC
    assert record.not_before == not_before and record.not_before.hour == 10
    assert record.not_after == not_after


def test_naive_datetimes_are_refused(store: Store, make_certificate: Factory) -> None:
    with pytest.raises(ValueError):
        store.record_issued(
            profile="default", transaction_id=None, certificate=make_certificate(1, not_before=datetime(2030, 1, 1))
        )
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(1))
    with pytest.raises(ValueError):
        store.revoke(1, ISSUER, reason=1, revoked_at=datetime(2030, 1, 1))
    assert store.count_certificates(status=CertStatus.REVOKED) == 0


def test_sans_and_large_der_round_trip(store: Store, make_certificate: Factory) -> None:
    sans = ("dns:host.example", "email:a@b", "upn:ü@corp.example", "uri:urn:uuid:1", "ip:10.0.0.1", "ip:2001:db8::1")
    der = bytes(range(256)) * 64
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(1, sans=sans, der=der))
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(2, sans=()))
    one, two = store.get_certificate(1, ISSUER), store.get_certificate(2, ISSUER)
    assert one is not None and one.sans == sans and one.der == der
    assert two is not None and two.sans == ()


def test_find_certificates_by_subject(store: Store, make_certificate: Factory) -> None:
    for serial, issuer in ((1, ISSUER), (2, ISSUER), (3, OTHER_ISSUER)):
        new = make_certificate(serial, issuer=issuer, subject="CN=laptop,O=corp")
        store.record_issued(profile="default", transaction_id=None, certificate=new)
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(4))
    found = store.find_certificates_by_subject(ISSUER, "CN=laptop,O=corp")
    assert [record.serial for record in found] == [2, 1]
    assert store.find_certificates_by_subject(ISSUER, "CN=nobody") == []


def test_list_and_count_certificates(store: Store, make_certificate: Factory) -> None:
    for serial in range(1, 6):
        profile = "wifi" if serial % 2 else "vpn"
        store.record_issued(profile=profile, transaction_id=None, certificate=make_certificate(serial, profile=profile))
    store.revoke(2, ISSUER, reason=0, revoked_at=datetime.now(UTC))

    assert [r.serial for r in store.list_certificates()] == [5, 4, 3, 2, 1]
    assert [r.serial for r in store.list_certificates(limit=2, offset=1)] == [4, 3]
    assert [r.serial for r in store.list_certificates(status=CertStatus.REVOKED)] == [2]
    assert [r.serial for r in store.list_certificates(profile="wifi")] == [5, 3, 1]
    assert [r.serial for r in store.list_certificates(status=CertStatus.VALID, profile="vpn")] == [4]
    assert store.count_certificates() == 5
    assert store.count_certificates(status=CertStatus.VALID) == 4
    assert store.count_certificates(status=CertStatus.REVOKED) == 1
    with pytest.raises(ValueError):
        store.list_certificates(limit=0)


def test_revoke_then_revoke_again(store: Store, make_certificate: Factory) -> None:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(MAX_SERIAL))
    when = datetime(2030, 5, 1, 8, 30, tzinfo=timezone(timedelta(hours=-5)))
    record = store.revoke(MAX_SERIAL, ISSUER, reason=1, revoked_at=when)
    assert record.status is CertStatus.REVOKED
    assert record.revoked_at == when and record.revoked_at is not None and record.revoked_at.tzinfo is UTC
    assert record.revocation_reason == 1
    assert store.get_certificate(MAX_SERIAL, ISSUER) == record

    with pytest.raises(AlreadyRevoked) as info:
        store.revoke(MAX_SERIAL, ISSUER, reason=4, revoked_at=datetime.now(UTC))
    assert info.value.certificate == record
    assert store.get_certificate(MAX_SERIAL, ISSUER) == record


def test_revoke_unknown_certificate(store: Store, make_certificate: Factory) -> None:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(10))
    with pytest.raises(CertificateNotFound) as info:
        store.revoke(11, ISSUER, reason=0, revoked_at=datetime.now(UTC))
    assert (info.value.serial, info.value.issuer) == (11, ISSUER)
    with pytest.raises(CertificateNotFound):
        store.revoke(10, OTHER_ISSUER, reason=0, revoked_at=datetime.now(UTC))


@pytest.mark.parametrize("reason", [-1, 7, 11])
def test_revoke_refuses_unknown_reason_codes(store: Store, make_certificate: Factory, reason: int) -> None:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(10))
    with pytest.raises(ValueError):
        store.revoke(10, ISSUER, reason=reason, revoked_at=datetime.now(UTC))
    record = store.get_certificate(10, ISSUER)
    assert record is not None and record.status is CertStatus.VALID
