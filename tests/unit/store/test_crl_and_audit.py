from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from scep_server.store import NewCertificate, Store
from scep_server.store.repository import Store as StoreClass

Factory = Callable[..., NewCertificate]
ISSUER = "CN=Test CA,O=scep-server"
OTHER_ISSUER = "CN=Other CA"


def _issue_and_revoke(store: Store, make_certificate: Factory, serial: int, issuer: str = ISSUER) -> datetime:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(serial, issuer=issuer))
    when = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=serial % 1000)
    store.revoke(serial, issuer, reason=serial % 5, revoked_at=when)
    return when


def test_iter_revoked_reads_in_batches(
    store: Store, make_certificate: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    serials = [0x0A, 0xFF, 0x100, 1 << 100, (1 << 160) - 1]
    expected = {(s, _issue_and_revoke(store, make_certificate, s), s % 5) for s in serials}
    for serial in (2, 3):
        store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(serial))
    _issue_and_revoke(store, make_certificate, 0x0B, issuer=OTHER_ISSUER)

    batches: list[int] = []
    original = StoreClass._revoked_batch

    def spy(self: Store, issuer: str, after: str, size: int) -> list[tuple[str, datetime, int | None]]:
        rows = original(self, issuer, after, size)
        batches.append(len(rows))
        return rows

    monkeypatch.setattr(StoreClass, "_revoked_batch", spy)
    revoked = store.iter_revoked(ISSUER, batch_size=2)
    first = next(revoked)
    assert batches == [2]  # nothing beyond the first batch has been read yet
    rest = list(revoked)
    assert batches == [2, 2, 1]
    got = [first, *rest]
    assert len(got) == len(set(got)) == 5
    assert set(got) == expected
    assert all(revoked_at.tzinfo is UTC for _, revoked_at, _ in got)


def test_iter_revoked_with_exact_multiple_and_nothing(store: Store, make_certificate: Factory) -> None:
    for serial in (1, 2, 3, 4):
        _issue_and_revoke(store, make_certificate, serial)
    assert sorted(s for s, _, _ in store.iter_revoked(ISSUER, batch_size=2)) == [1, 2, 3, 4]
    assert list(store.iter_revoked("CN=Nobody")) == []
    with pytest.raises(ValueError):
        store.iter_revoked(ISSUER, batch_size=0)


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


def test_record_operation_appends_to_the_audit_log(store: Store) -> None:
    before = datetime.now(UTC)
    store.record_operation(
        profile="default",
        operation="PKIOperation",
        message_type=None,
        transaction_id=None,
        outcome="bad_request",
        detail="undecodable CMS",
        requester_ip="198.51.100.7",
    )
    store.record_operation(
        profile="default",
        operation="PKIOperation",
        message_type=19,
        transaction_id="tx-1",
        outcome="issued",
        detail=None,
        requester_ip=None,
    )
    store.record_operation(
        profile="wifi",
        operation="PKIOperation",
        message_type=20,
        transaction_id="tx-1",
        outcome="pending",
        detail=None,
        requester_ip=None,
    )
    events = store.list_operations()
    assert [(e.profile, e.outcome) for e in events] == [
        ("wifi", "pending"),
        ("default", "issued"),
        ("default", "bad_request"),
    ]
    oldest = events[-1]
    assert (oldest.message_type, oldest.transaction_id, oldest.detail, oldest.requester_ip) == (
        None,
        None,
        "undecodable CMS",
        "198.51.100.7",
    )
    assert all(e.occurred_at.tzinfo is UTC and e.occurred_at >= before for e in events)
    assert [e.outcome for e in store.list_operations(profile="default", transaction_id="tx-1")] == ["issued"]
    assert [e.outcome for e in store.list_operations(limit=1, offset=1)] == ["issued"]


def test_record_operation_truncates_a_hostile_transaction_id(store: Store) -> None:
    store.record_operation(
        profile="default",
        operation="PKIOperation",
        message_type=19,
        transaction_id="x" * 1000,
        outcome="bad_request",
        detail=None,
        requester_ip=None,
    )
    (event,) = store.list_operations()
    assert event.transaction_id == "x" * 255


def test_record_operation_refuses_overlong_labels(store: Store) -> None:
    with pytest.raises(ValueError):
        store.record_operation(
            profile="default",
            operation="o" * 65,
            message_type=None,
            transaction_id=None,
            outcome="x",
            detail=None,
            requester_ip=None,
        )
    assert store.list_operations() == []
