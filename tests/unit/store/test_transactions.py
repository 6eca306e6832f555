"""Claiming SCEP transactions (new, repeated, stale, racing), failing them and reading them back."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from scep_server.store import (
    NewCertificate,
    Store,
    TransactionNotPending,
    TransactionRecord,
    TransactionState,
)
from scep_server.store.tables import transactions

PKCS_REQ = 19
RENEWAL_REQ = 17


def _claim(
    store: Store,
    transaction_id: str = "tx-1",
    csr: bytes = b"csr-1",
    stale_after: timedelta = timedelta(minutes=5),
    **extra: str,
) -> tuple[TransactionRecord, bool]:
    return store.claim_transaction(
        profile="default",
        transaction_id=transaction_id,
        message_type=PKCS_REQ,
        csr_der=csr,
        requester_ip="192.0.2.1",
        stale_after=stale_after,
        **extra,
    )


def _backdate(store: Store, transaction_id: str, age: timedelta) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            update(transactions)
            .where(transactions.c.transaction_id == transaction_id)
            .values(updated_at=datetime.now(UTC) - age)
        )


def _claim_concurrently(store: Store, transaction_id: str, workers: int = 8) -> list[tuple[TransactionRecord, bool]]:
    barrier = threading.Barrier(workers)

    def claim(n: int) -> tuple[TransactionRecord, bool]:
        barrier.wait()
        return _claim(store, transaction_id, csr=f"csr-{n}".encode())

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(claim, range(workers)))


def test_first_claim_inserts_a_pending_row(store: Store) -> None:
    before = datetime.now(UTC)
    record, claimed = _claim(store)
    assert claimed is True
    assert record.state is TransactionState.PENDING
    assert (record.profile, record.transaction_id, record.message_type) == ("default", "tx-1", PKCS_REQ)
    assert record.csr_der == b"csr-1"
    assert record.csr_sha256 == hashlib.sha256(b"csr-1").hexdigest()
    assert record.serial is None and record.fail_info is None and record.fail_reason is None
    assert record.requester_ip == "192.0.2.1"
    assert record.created_at.tzinfo is UTC and record.updated_at.tzinfo is UTC
    assert before <= record.created_at == record.updated_at <= datetime.now(UTC)
    assert store.get_transaction("default", "tx-1") == record


def test_second_claim_returns_the_existing_row_unchanged(store: Store) -> None:
    first, _ = _claim(store)
    again, claimed = _claim(store, csr=b"other-csr")
    assert claimed is False
    assert again == first
    assert store.get_transaction("default", "tx-1") == first


def test_transaction_ids_are_scoped_per_profile(store: Store) -> None:
    _claim(store)
    other, claimed = store.claim_transaction(
        profile="wifi", transaction_id="tx-1", message_type=RENEWAL_REQ, csr_der=b"x", requester_ip=None
    )
    assert claimed is True
    assert other.profile == "wifi" and other.message_type == RENEWAL_REQ
    assert store.get_transaction("default", "tx-1") is not None
    assert store.get_transaction("nope", "tx-1") is None


def test_failed_transaction_is_reclaimed_with_the_new_csr(store: Store) -> None:
    original, _ = _claim(store)
    store.record_failure(profile="default", transaction_id="tx-1", fail_info=2, reason="challenge rejected")
    failed = store.get_transaction("default", "tx-1")
    assert failed is not None
    assert (failed.state, failed.fail_info, failed.fail_reason) == (TransactionState.FAILED, 2, "challenge rejected")

    record, claimed = _claim(store, csr=b"csr-2")
    assert claimed is True
    assert record.state is TransactionState.PENDING
    assert record.csr_der == b"csr-2" and record.csr_sha256 == hashlib.sha256(b"csr-2").hexdigest()
    assert record.fail_info is None and record.fail_reason is None
    assert record.created_at == original.created_at
    assert record.updated_at > failed.updated_at


def test_stale_pending_transaction_is_reclaimed(store: Store) -> None:
    _claim(store)
    _backdate(store, "tx-1", timedelta(minutes=10))
    assert _claim(store, csr=b"late", stale_after=timedelta(hours=1))[1] is False

    record, claimed = _claim(store, csr=b"retry")
    assert claimed is True
    assert record.csr_der == b"retry"
    assert datetime.now(UTC) - record.updated_at < timedelta(minutes=1)
    assert _claim(store, csr=b"third")[1] is False


def test_issued_transaction_is_never_reclaimed(store: Store, make_certificate: Callable[..., NewCertificate]) -> None:
    _claim(store)
    store.record_issued(profile="default", transaction_id="tx-1", certificate=make_certificate(7))
    _backdate(store, "tx-1", timedelta(days=1))
    record, claimed = _claim(store, csr=b"again")
    assert claimed is False
    assert record.state is TransactionState.ISSUED and record.serial == 7
    # The request (it may hold a shared secret) is dropped once decided; its hash still identifies it.
    assert record.csr_der is None and record.csr_sha256 == hashlib.sha256(b"csr-1").hexdigest()


def test_concurrent_claims_of_a_new_id_have_one_winner(store: Store) -> None:
    results = _claim_concurrently(store, "race-new")
    assert sum(claimed for _, claimed in results) == 1
    winner = next(record for record, claimed in results if claimed)
    assert {record.csr_der for record, _ in results} == {winner.csr_der}
    assert store.get_transaction("default", "race-new") == winner
    with store.engine.connect() as conn:
        rows = conn.execute(select(func.count()).where(transactions.c.transaction_id == "race-new")).scalar_one()
    assert rows == 1


def test_concurrent_reclaims_of_a_failed_id_have_one_winner(store: Store) -> None:
    _claim(store, "race-failed")
    store.record_failure(profile="default", transaction_id="race-failed", fail_info=2, reason="bad")
    results = _claim_concurrently(store, "race-failed")
    assert sum(claimed for _, claimed in results) == 1
    winner = next(record for record, claimed in results if claimed)
    assert winner.state is TransactionState.PENDING
    assert store.get_transaction("default", "race-failed") == winner


def test_record_failure_needs_a_pending_transaction(
    store: Store, make_certificate: Callable[..., NewCertificate]
) -> None:
    with pytest.raises(TransactionNotPending) as missing:
        store.record_failure(profile="default", transaction_id="nope", fail_info=2, reason="x")
    assert missing.value.state is None

    _claim(store)
    store.record_issued(profile="default", transaction_id="tx-1", certificate=make_certificate(9))
    with pytest.raises(TransactionNotPending) as issued:
        store.record_failure(profile="default", transaction_id="tx-1", fail_info=2, reason="x")
    assert issued.value.state is TransactionState.ISSUED
    record = store.get_transaction("default", "tx-1")
    assert record is not None and record.state is TransactionState.ISSUED and record.fail_info is None


@pytest.mark.parametrize(
    ("profile", "transaction_id"), [("", "t"), ("default", ""), ("default", "x" * 256), ("p" * 65, "t")]
)


def test_claim_rejects_bad_keys(store: Store, profile: str, transaction_id: str) -> None:
    with pytest.raises(ValueError):
        store.claim_transaction(
            profile=profile, transaction_id=transaction_id, message_type=PKCS_REQ, csr_der=b"x", requester_ip=None
        )


def test_long_transaction_ids_up_to_the_limit_are_kept_whole(store: Store) -> None:
    long_id = "A" * 255
    record, claimed = _claim(store, long_id)
    assert claimed and record.transaction_id == long_id
    assert store.get_transaction("default", long_id) == record


def _get(store: Store, transaction_id: str = "tx-1") -> TransactionRecord:
    record = store.get_transaction("default", transaction_id)
    assert record is not None
    return record


def test_fail_issued_transaction_keeps_the_serial(
    store: Store, make_certificate: Callable[..., NewCertificate]
) -> None:
    _claim(store)
    store.record_issued(profile="default", transaction_id="tx-1", certificate=make_certificate(0x43))
    issued = _get(store)
    store.fail_issued_transaction(profile="default", transaction_id="tx-1", fail_info=2, reason="notify failed")
    record = _get(store)
    assert (record.state, record.serial) == (TransactionState.FAILED, 0x43)
    assert (record.fail_info, record.fail_reason) == (2, "notify failed")
    assert record.updated_at >= issued.updated_at

    with pytest.raises(TransactionNotPending) as failed:
        store.fail_issued_transaction(profile="default", transaction_id="tx-1", fail_info=2, reason="again")
    assert failed.value.state is TransactionState.FAILED
    assert _get(store).fail_reason == "notify failed"


def test_fail_issued_transaction_needs_an_issued_one(store: Store) -> None:
    with pytest.raises(TransactionNotPending) as missing:
        store.fail_issued_transaction(profile="default", transaction_id="nope", fail_info=2, reason="x")
    assert missing.value.state is None
    _claim(store)
    with pytest.raises(TransactionNotPending) as pending:
        store.fail_issued_transaction(profile="default", transaction_id="tx-1", fail_info=2, reason="x")
    assert pending.value.state is TransactionState.PENDING
    assert _get(store).state is TransactionState.PENDING


def test_finding8_claim_records_who_may_poll(store: Store) -> None:
    record, _ = _claim(store, signer_key_sha256="a" * 64, subject_sha256="b" * 64)
    assert (record.signer_key_sha256, record.subject_sha256) == ("a" * 64, "b" * 64)
    store.record_failure(profile="default", transaction_id="tx-1", fail_info=2, reason="no")
    again, _ = _claim(store, csr=b"csr-2", signer_key_sha256="c" * 64, subject_sha256="d" * 64)
    assert (again.signer_key_sha256, again.subject_sha256) == ("c" * 64, "d" * 64)
