"""Storing and reading certificates: serials, datetimes, SANs, issuers, queries and pages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from scep_server.store import CertStatus, NewCertificate, Store
from scep_server.store.tables import certificates

Factory = Callable[..., NewCertificate]
ISSUER = "CN=Test CA,O=scep-server"
OTHER_ISSUER = "CN=Other CA"
MAX_SERIAL = (1 << 160) - 1


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
