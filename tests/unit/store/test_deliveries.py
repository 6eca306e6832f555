"""Storing issued certificates, and finding 5: a certificate stored for a transaction and not yet delivered.

It is linked to its PENDING transaction when stored; a reclaim of that transaction for the same CSR keeps
it (to re-deliver it), any other reclaim revokes it; completing, withdrawing and abandoning settle
concurrent handlers so that a transaction ends with exactly one valid certificate, the delivered one.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from scep_server.store import (
    AlreadyRevoked,
    CertificateNotFound,
    CertificateRecord,
    CertStatus,
    DuplicateCertificate,
    NewCertificate,
    Store,
    TransactionNotPending,
    TransactionRecord,
    TransactionState,
)
from scep_server.store.tables import transactions

Factory = Callable[..., NewCertificate]
ISSUER = "CN=Test CA,O=scep-server"
TX = "tx-1"
CSR = b"csr-1"
CESSATION_OF_OPERATION = 5


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _claim(store: Store, csr: bytes = CSR, transaction_id: str = TX) -> tuple[TransactionRecord, bool]:
    return store.claim_transaction(
        profile="default", transaction_id=transaction_id, message_type=19, csr_der=csr, requester_ip=None
    )


def _stored(store: Store, make_certificate: Factory, serial: int, csr: bytes = CSR, transaction_id: str = TX) -> None:
    store.record_undelivered(
        profile="default", transaction_id=transaction_id, csr_sha256=_digest(csr),
        certificate=make_certificate(serial, transaction_id=transaction_id),
    )


def _age(store: Store, by: timedelta, transaction_id: str = TX) -> None:
    """As if the transaction's handler had gone quiet ``by`` ago."""
    with store.engine.begin() as conn:
        conn.execute(
            update(transactions).where(transactions.c.transaction_id == transaction_id)
            .values(updated_at=datetime.now(UTC) - by)
        )


def _status(store: Store, serial: int) -> CertStatus:
    record = store.get_certificate(serial, ISSUER)
    assert record is not None
    return record.status


def _complete(store: Store, serial: int, csr: bytes = CSR) -> None:
    store.complete_transaction(profile="default", transaction_id=TX, serial=serial, issuer=ISSUER,
                               csr_sha256=_digest(csr))


def _withdraw(store: Store, serial: int) -> bool:
    return store.withdraw_undelivered(profile="default", transaction_id=TX, serial=serial, issuer=ISSUER,
                                      reason=CESSATION_OF_OPERATION, revoked_at=datetime.now(UTC))


def test_finding5_stored_certificate_is_linked_to_its_pending_transaction(
    store: Store, make_certificate: Factory
) -> None:
    _claim(store)
    _stored(store, make_certificate, 0x51)
    record = store.get_transaction("default", TX)
    assert record is not None and record.state is TransactionState.PENDING and record.serial == 0x51
    assert record.csr_der == CSR  # still needed: the transaction is not decided until it is delivered
    _complete(store, 0x51)
    done = store.get_transaction("default", TX)
    assert done is not None and done.state is TransactionState.ISSUED and done.serial == 0x51


@pytest.mark.parametrize("case", ["other csr", "already linked", "failed", "missing"])
def test_finding5_record_undelivered_stores_nothing_for_a_transaction_it_does_not_hold(
    store: Store, make_certificate: Factory, case: str
) -> None:
    _claim(store)
    if case == "already linked":
        _stored(store, make_certificate, 0x60)
    if case == "failed":
        store.record_failure(profile="default", transaction_id=TX, fail_info=2, reason="no")
    csr, transaction_id = (b"csr-2", TX) if case == "other csr" else (CSR, "nope" if case == "missing" else TX)
    with pytest.raises(TransactionNotPending):
        _stored(store, make_certificate, 0x61, csr=csr, transaction_id=transaction_id)
    assert store.get_certificate(0x61) is None


def test_finding5_reclaim_for_the_same_csr_keeps_the_undelivered_certificate(
    store: Store, make_certificate: Factory
) -> None:
    _claim(store)
    _stored(store, make_certificate, 0x70)
    _age(store, timedelta(minutes=10))
    record, claimed = _claim(store)
    assert claimed and record.state is TransactionState.PENDING and record.serial == 0x70
    assert _status(store, 0x70) is CertStatus.VALID
    _complete(store, 0x70)
    assert store.count_certificates(status=CertStatus.VALID) == 1


def test_finding5_reclaim_for_another_csr_revokes_the_undelivered_certificate(
    store: Store, make_certificate: Factory
) -> None:
    _claim(store)
    _stored(store, make_certificate, 0x71)
    _age(store, timedelta(minutes=10))
    record, claimed = _claim(store, csr=b"csr-2")
    assert claimed and record.serial is None
    revoked = store.get_certificate(0x71, ISSUER)
    assert revoked is not None and revoked.status is CertStatus.REVOKED
    assert revoked.revocation_reason == CESSATION_OF_OPERATION
    newest = store.list_audit(limit=1)[0]  # the withdrawal is audited like any other
    assert newest.action == "certificate.withdraw" and "71" in newest.subject
    assert store.verify_audit().intact


def test_finding5_reclaim_of_a_failed_transaction_revokes_every_undelivered_certificate(
    store: Store, make_certificate: Factory
) -> None:
    _claim(store)
    # Stored the way earlier versions did (no link), then the transaction failed: an orphan.
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(0x72, transaction_id=TX))
    store.record_failure(profile="default", transaction_id=TX, fail_info=2, reason="not acknowledged")
    _claim(store)
    assert _status(store, 0x72) is CertStatus.REVOKED


def test_finding5_reclaim_does_not_keep_a_revoked_certificate(store: Store, make_certificate: Factory) -> None:
    _claim(store)
    _stored(store, make_certificate, 0x73)
    store.revoke(0x73, ISSUER, reason=1, revoked_at=datetime.now(UTC))
    _age(store, timedelta(minutes=10))
    record, claimed = _claim(store)
    assert claimed and record.serial is None


def test_finding5_revoked_certificate_is_never_completed(store: Store, make_certificate: Factory) -> None:
    _claim(store)
    _stored(store, make_certificate, 0x74)
    store.revoke(0x74, ISSUER, reason=5, revoked_at=datetime.now(UTC))
    with pytest.raises(AlreadyRevoked):
        _complete(store, 0x74)
    record = store.get_transaction("default", TX)
    assert record is not None and record.state is TransactionState.PENDING


def test_finding5_withdraw_revokes_and_unlinks_an_undelivered_certificate(
    store: Store, make_certificate: Factory
) -> None:
    _claim(store)
    _stored(store, make_certificate, 0x75)
    assert _withdraw(store, 0x75) is True
    assert _status(store, 0x75) is CertStatus.REVOKED
    record = store.get_transaction("default", TX)
    assert record is not None and record.state is TransactionState.PENDING and record.serial is None
    assert _withdraw(store, 0x75) is True  # already revoked: still withdrawn
    with pytest.raises(CertificateNotFound):
        _withdraw(store, 0x7F)


def test_finding5_withdraw_leaves_a_delivered_certificate_valid(store: Store, make_certificate: Factory) -> None:
    _claim(store)
    _stored(store, make_certificate, 0x76)
    _complete(store, 0x76)
    assert _withdraw(store, 0x76) is False
    assert _status(store, 0x76) is CertStatus.VALID


def _race(store: Store, transaction_id: str, serial: int) -> tuple[str, str]:
    """Complete and withdraw one stored certificate at the same moment, from two threads."""
    barrier = threading.Barrier(2)

    def complete() -> str:
        barrier.wait()
        try:
            store.complete_transaction(profile="default", transaction_id=transaction_id, serial=serial, issuer=ISSUER)
        except AlreadyRevoked:
            return "refused"
        return "delivered"

    def withdraw() -> str:
        barrier.wait()
        revoked = store.withdraw_undelivered(profile="default", transaction_id=transaction_id, serial=serial,
                                             issuer=ISSUER, reason=5, revoked_at=datetime.now(UTC))
        return "revoked" if revoked else "kept"

    with ThreadPoolExecutor(2) as pool:
        delivering, withdrawing = pool.submit(complete), pool.submit(withdraw)
        return delivering.result(timeout=30), withdrawing.result(timeout=30)


def test_finding5_withdraw_and_complete_racing_never_deliver_a_revoked_certificate(
    store: Store, make_certificate: Factory
) -> None:
    """Two handlers of one reclaimed transaction: one delivers the stored certificate, the other withdraws it."""
    for round_ in range(12):
        transaction_id, serial = f"race-{round_}", 0x1000 + round_
        _claim(store, transaction_id=transaction_id)
        _stored(store, make_certificate, serial, transaction_id=transaction_id)
        outcome = _race(store, transaction_id, serial)
        record = store.get_transaction("default", transaction_id)
        assert record is not None
        assert outcome in {("delivered", "kept"), ("refused", "revoked")}
        assert (record.state is TransactionState.ISSUED) == (_status(store, serial) is CertStatus.VALID)


def test_finding5_abandoned_transaction_is_failed_and_its_certificate_revoked(
    store: Store, make_certificate: Factory
) -> None:
    _claim(store)
    _stored(store, make_certificate, 0x77)
    _claim(store, transaction_id="fresh")
    _stored(store, make_certificate, 0x78, transaction_id="fresh")
    _age(store, timedelta(days=2))
    before = datetime.now(UTC) - timedelta(days=1)
    due = store.undelivered_before(before=before)
    assert [r.transaction_id for r in due] == [TX] and due[0].csr_der == CSR
    revoked = store.abandon_transaction(profile="default", transaction_id=TX, before=before, fail_info=2,
                                        reason="never collected", revoked_at=datetime.now(UTC))
    assert revoked == 0x77 and _status(store, 0x77) is CertStatus.REVOKED
    record = store.get_transaction("default", TX)
    assert record is not None and record.state is TransactionState.FAILED and record.csr_der is None
    assert store.abandon_transaction(profile="default", transaction_id=TX, before=before, fail_info=2,
                                     reason="again", revoked_at=datetime.now(UTC)) is None
    assert _status(store, 0x78) is CertStatus.VALID


def _fields_match(record: CertificateRecord, new: NewCertificate) -> bool:
    return all(getattr(record, name) == getattr(new, name) for name in NewCertificate.__slots__)


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
    _claim(store, transaction_id="tx-1")
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
    _claim(store, transaction_id="tx-1")
    store.record_failure(profile="default", transaction_id="tx-1", fail_info=2, reason="denied")
    with pytest.raises(TransactionNotPending) as info:
        store.record_issued(profile="default", transaction_id="tx-1", certificate=make_certificate(5))
    assert info.value.state is TransactionState.FAILED
    assert store.get_certificate(5) is None


def test_duplicate_serial_leaves_the_transaction_pending(store: Store, make_certificate: Factory) -> None:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(77))
    _claim(store, transaction_id="tx-2")
    with pytest.raises(DuplicateCertificate) as info:
        store.record_issued(profile="default", transaction_id="tx-2", certificate=make_certificate(77))
    assert (info.value.serial, info.value.issuer) == (77, ISSUER)
    transaction = store.get_transaction("default", "tx-2")
    assert transaction is not None and transaction.state is TransactionState.PENDING and transaction.serial is None
    assert store.count_certificates() == 1


def test_complete_transaction_links_a_stored_certificate(
    store: Store, make_certificate: Callable[..., NewCertificate]
) -> None:
    _claim(store)
    cert = make_certificate(9)
    store.record_issued(profile="default", transaction_id=None, certificate=cert)
    pending = store.get_transaction("default", "tx-1")
    assert pending is not None and pending.state is TransactionState.PENDING  # stored, not yet handed out
    store.complete_transaction(profile="default", transaction_id="tx-1", serial=9, issuer=cert.issuer,
                               csr_sha256=hashlib.sha256(b"csr-1").hexdigest())
    done = store.get_transaction("default", "tx-1")
    assert done is not None and done.state is TransactionState.ISSUED and done.serial == 9 and done.csr_der is None


def test_complete_transaction_refuses_a_reclaimed_or_finished_transaction(
    store: Store, make_certificate: Callable[..., NewCertificate]
) -> None:
    _claim(store)
    cert = make_certificate(10)
    store.record_issued(profile="default", transaction_id=None, certificate=cert)
    with pytest.raises(TransactionNotPending):  # the row now belongs to another request
        store.complete_transaction(profile="default", transaction_id="tx-1", serial=10, issuer=cert.issuer,
                                   csr_sha256=hashlib.sha256(b"another request").hexdigest())
    with pytest.raises(CertificateNotFound):
        store.complete_transaction(profile="default", transaction_id="tx-1", serial=11, issuer=cert.issuer)
    store.complete_transaction(profile="default", transaction_id="tx-1", serial=10, issuer=cert.issuer)
    # Completing it again with the same certificate is a no-op (two handlers delivering one certificate) ...
    store.complete_transaction(profile="default", transaction_id="tx-1", serial=10, issuer=cert.issuer)
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(12))
    with pytest.raises(TransactionNotPending):  # ... with another one it is refused
        store.complete_transaction(profile="default", transaction_id="tx-1", serial=12, issuer=cert.issuer)
