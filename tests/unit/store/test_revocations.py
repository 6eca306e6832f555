"""Revoking certificates, listing the revoked ones in batches for CRLs and OCSP, and CRL numbers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event

from scep_server.store import AlreadyRevoked, CertificateNotFound, CertStatus, NewCertificate, Store

Factory = Callable[..., NewCertificate]
ISSUER = "CN=Test CA,O=scep-server"
OTHER_ISSUER = "CN=Other CA"
MAX_SERIAL = (1 << 160) - 1


def _issue_and_revoke(store: Store, make_certificate: Factory, serial: int, issuer: str = ISSUER) -> datetime:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(serial, issuer=issuer))
    when = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=serial % 1000)
    store.revoke(serial, issuer, reason=serial % 5, revoked_at=when)
    return when


def test_iter_revoked_streams_one_query_in_batches(store: Store, make_certificate: Factory) -> None:
    serials = [0x0A, 0xFF, 0x100, 1 << 100, (1 << 160) - 1]
    expected = {(s, _issue_and_revoke(store, make_certificate, s), s % 5) for s in serials}
    for serial in (2, 3):
        store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(serial))
    _issue_and_revoke(store, make_certificate, 0x0B, issuer=OTHER_ISSUER)

    fetch_sizes: list[int | None] = []

    def spy(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "revocation_reason" in statement:
            fetch_sizes.append(context.execution_options.get("yield_per"))

    engine = store.revocations._engine
    event.listen(engine, "before_cursor_execute", spy)
    try:
        got = list(store.iter_revoked(ISSUER, batch_size=2))
    finally:
        event.remove(engine, "before_cursor_execute", spy)
    assert fetch_sizes == [2]  # one query, fetched two rows at a time
    assert len(got) == len(set(got)) == 5
    assert set(got) == expected
    assert all(revoked_at.tzinfo is UTC for _, revoked_at, _ in got)


def test_iter_revoked_reads_times_back_in_utc(store: Store, make_certificate: Factory) -> None:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(5))
    revoked_at = datetime(2031, 6, 1, 1, 30, 15, 250, tzinfo=timezone(timedelta(hours=2)))
    store.revoke(5, ISSUER, reason=1, revoked_at=revoked_at)
    [(serial, when, reason)] = store.iter_revoked(ISSUER)
    assert (serial, reason) == (5, 1)
    assert when == revoked_at and when.tzinfo is UTC and when.hour == 23


def test_iter_revoked_with_exact_multiple_and_nothing(store: Store, make_certificate: Factory) -> None:
    for serial in (1, 2, 3, 4):
        _issue_and_revoke(store, make_certificate, serial)
    assert [s for s, _, _ in store.iter_revoked(ISSUER, batch_size=2)] == [1, 2, 3, 4]  # serial_hex order
    assert list(store.iter_revoked("CN=Nobody")) == []
    with pytest.raises(ValueError):
        store.iter_revoked(ISSUER, batch_size=0)


def test_iter_revoked_gives_its_connection_back_when_left_early(store: Store, make_certificate: Factory) -> None:
    for serial in (1, 2, 3):
        _issue_and_revoke(store, make_certificate, serial)
    pool = store.revocations._engine.pool
    revoked = store.iter_revoked(ISSUER, batch_size=1)
    next(revoked)
    assert pool.checkedout() == 1  # type: ignore[attr-defined]
    del revoked  # as when a CRL build fails on an entry
    assert pool.checkedout() == 0  # type: ignore[attr-defined]


def test_next_crl_number_counts_per_issuer(store: Store, db_url: str) -> None:
    assert [store.next_crl_number(ISSUER) for _ in range(3)] == [1, 2, 3]
    assert store.next_crl_number(OTHER_ISSUER) == 1
    with Store.open(db_url) as reopened:
        assert reopened.next_crl_number(ISSUER) == 4


def test_next_crl_number_is_atomic_under_concurrency(store: Store) -> None:
    workers = 8
    barrier = threading.Barrier(workers)

    def allocate(_: int) -> list[int]:
        barrier.wait()
        return [store.next_crl_number(ISSUER) for _ in range(3)]

    with ThreadPoolExecutor(workers) as pool:
        numbers = [n for chunk in pool.map(allocate, range(workers)) for n in chunk]
    assert sorted(numbers) == list(range(1, workers * 3 + 1))


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
