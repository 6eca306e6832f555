"""Deferred transactions: deferring, leasing and rescheduling their background retries."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from scep_server.store import NewCertificate, Store, TransactionNotPending, TransactionRecord, TransactionState
from scep_server.store.tables import transactions

PKCS_REQ = 19
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _claim(store: Store, transaction_id: str = "tx-1", csr: bytes = b"csr-1") -> tuple[TransactionRecord, bool]:
    return store.claim_transaction(
        profile="default", transaction_id=transaction_id, message_type=PKCS_REQ, csr_der=csr, requester_ip=None
    )


def _defer(store: Store, transaction_id: str = "tx-1", at: datetime = T0, error: str = "Intune unreachable") -> None:
    store.defer_transaction(profile="default", transaction_id=transaction_id, next_attempt_at=at, error=error)


def _get(store: Store, transaction_id: str = "tx-1") -> TransactionRecord:
    record = store.get_transaction("default", transaction_id)
    assert record is not None
    return record


def _backdate(store: Store, transaction_id: str, age: timedelta) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            update(transactions)
            .where(transactions.c.transaction_id == transaction_id)
            .values(updated_at=datetime.now(UTC) - age)
        )


def _ids(records: list[TransactionRecord]) -> list[str]:
    return [record.transaction_id for record in records]


def test_a_new_transaction_is_not_deferred(store: Store) -> None:
    record, _ = _claim(store)
    assert (record.deferred, record.attempts, record.next_attempt_at, record.last_error) == (False, 0, None, None)


def test_defer_marks_a_pending_transaction_for_a_background_retry(store: Store) -> None:
    claimed, _ = _claim(store)
    _defer(store, at=T0.astimezone(timezone(timedelta(hours=2))), error="graph 503")
    record = _get(store)
    assert record.state is TransactionState.PENDING
    assert (record.deferred, record.attempts, record.last_error) == (True, 1, "graph 503")
    assert record.next_attempt_at == T0 and record.next_attempt_at.tzinfo is UTC
    assert record.csr_der == claimed.csr_der and record.created_at == claimed.created_at
    assert record.updated_at >= claimed.updated_at


def test_due_deferred_lists_due_transactions_oldest_first(store: Store) -> None:
    for transaction_id, at in (("later", T0 + 2 * MINUTE), ("first", T0), ("second", T0 + MINUTE)):
        _claim(store, transaction_id)
        _defer(store, transaction_id, at=at)
    _claim(store, "not-deferred")
    assert store.due_deferred(now=T0 - MINUTE) == []
    assert _ids(store.due_deferred(now=T0)) == ["first"]
    assert _ids(store.due_deferred(now=T0 + 5 * MINUTE)) == ["first", "second", "later"]
    assert _ids(store.due_deferred(now=T0 + 5 * MINUTE, limit=2)) == ["first", "second"]
    due = store.due_deferred(now=T0)[0]
    assert due == _get(store, "first")


def test_defer_lease_race_reschedule_and_due_again(store: Store) -> None:
    _claim(store)
    _defer(store)
    (due,) = store.due_deferred(now=T0)
    assert due.next_attempt_at == T0
    lease_until = T0 + 5 * MINUTE
    workers = 8
    barrier = threading.Barrier(workers)

    def lease(_: int) -> bool:
        barrier.wait()
        return store.lease_deferred(
            profile="default", transaction_id="tx-1", expected_next_attempt_at=T0, lease_until=lease_until
        )

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lease, range(workers)))
    assert results.count(True) == 1
    assert store.due_deferred(now=T0 + MINUTE) == []
    assert _ids(store.due_deferred(now=lease_until)) == ["tx-1"]  # due again should the winner die

    store.reschedule_deferred(profile="default", transaction_id="tx-1", next_attempt_at=T0 + 10 * MINUTE, error="again")
    record = _get(store)
    assert (record.deferred, record.attempts, record.last_error) == (True, 2, "again")
    assert record.next_attempt_at == T0 + 10 * MINUTE
    assert store.due_deferred(now=lease_until) == []
    assert _ids(store.due_deferred(now=T0 + 10 * MINUTE)) == ["tx-1"]


def test_lease_needs_the_expected_time_and_a_deferred_transaction(store: Store) -> None:
    _claim(store)

    def lease(expected: datetime) -> bool:
        return store.lease_deferred(
            profile="default", transaction_id="tx-1", expected_next_attempt_at=expected, lease_until=T0 + MINUTE
        )

    assert lease(T0) is False  # not deferred
    _defer(store)
    assert lease(T0 - MINUTE) is False
    assert lease(T0) is True
    assert lease(T0) is False
    assert _get(store).next_attempt_at == T0 + MINUTE
    assert not store.lease_deferred(
        profile="default", transaction_id="nope", expected_next_attempt_at=T0, lease_until=T0
    )
    assert _get(store).attempts == 1


def test_defer_needs_a_pending_transaction(store: Store, make_certificate: Callable[..., NewCertificate]) -> None:
    with pytest.raises(TransactionNotPending) as missing:
        _defer(store, "nope")
    assert missing.value.state is None
    _claim(store)
    store.record_issued(profile="default", transaction_id="tx-1", certificate=make_certificate(5))
    with pytest.raises(TransactionNotPending) as issued:
        _defer(store)
    assert issued.value.state is TransactionState.ISSUED
    assert _get(store).deferred is False


def test_reschedule_needs_a_deferred_pending_transaction(store: Store) -> None:
    def reschedule() -> None:
        store.reschedule_deferred(profile="default", transaction_id="tx-1", next_attempt_at=T0, error="x")

    with pytest.raises(TransactionNotPending) as missing:
        reschedule()
    assert missing.value.state is None
    _claim(store)
    with pytest.raises(TransactionNotPending) as not_deferred:
        reschedule()
    assert not_deferred.value.state is TransactionState.PENDING
    _defer(store)
    store.record_failure(profile="default", transaction_id="tx-1", fail_info=2, reason="rejected")
    with pytest.raises(TransactionNotPending) as failed:
        reschedule()
    assert failed.value.state is TransactionState.FAILED
    assert _get(store).attempts == 1


def test_deferred_transactions_are_never_reclaimed_as_stale(store: Store) -> None:
    _claim(store, "deferred")
    _defer(store, "deferred")
    _claim(store, "abandoned")
    for transaction_id in ("deferred", "abandoned"):
        _backdate(store, transaction_id, timedelta(days=1))

    record, claimed = _claim(store, "deferred", csr=b"retry")
    assert claimed is False
    assert record.deferred is True and record.csr_der == b"csr-1"
    record, claimed = _claim(store, "abandoned", csr=b"retry")
    assert claimed is True
    assert record.csr_der == b"retry" and record.deferred is False


def test_a_reclaim_resets_the_retry_fields(store: Store) -> None:
    _claim(store)
    _defer(store)
    store.record_failure(profile="default", transaction_id="tx-1", fail_info=2, reason="rejected")
    failed = _get(store)
    assert failed.state is TransactionState.FAILED and failed.deferred is False
    assert (failed.attempts, failed.last_error) == (1, "Intune unreachable")
    assert store.due_deferred(now=T0) == []

    record, claimed = _claim(store, csr=b"second try")
    assert claimed is True
    assert (record.deferred, record.attempts, record.next_attempt_at, record.last_error) == (False, 0, None, None)


def test_record_issued_clears_deferred(store: Store, make_certificate: Callable[..., NewCertificate]) -> None:
    _claim(store)
    _defer(store)
    store.record_issued(profile="default", transaction_id="tx-1", certificate=make_certificate(0x42))
    record = _get(store)
    assert (record.state, record.serial, record.deferred) == (TransactionState.ISSUED, 0x42, False)
    assert store.due_deferred(now=T0 + MINUTE) == []
    assert not store.lease_deferred(
        profile="default", transaction_id="tx-1", expected_next_attempt_at=T0, lease_until=T0 + MINUTE
    )


def test_deferred_methods_reject_misuse(store: Store) -> None:
    _claim(store)
    naive = datetime(2030, 1, 1)
    with pytest.raises(ValueError):
        _defer(store, at=naive)
    with pytest.raises(ValueError):
        store.due_deferred(now=naive)
    with pytest.raises(ValueError):
        store.due_deferred(now=T0, limit=0)
    with pytest.raises(ValueError):
        store.lease_deferred(profile="default", transaction_id="tx-1", expected_next_attempt_at=naive, lease_until=T0)
    with pytest.raises(ValueError):
        store.lease_deferred(profile="default", transaction_id="tx-1", expected_next_attempt_at=T0, lease_until=naive)
    _defer(store)
    with pytest.raises(ValueError):
        store.reschedule_deferred(profile="default", transaction_id="tx-1", next_attempt_at=naive, error="x")
    assert _get(store).attempts == 1
