"""An enrollment stored in one database transaction: the transaction ISSUED, its certificate and its audit
record together, or none of them; a second request of the transaction or a taken serial stores nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from scep_server.errors import StoreUnavailable
from scep_server.store import (
    AuditEvent,
    CertStatus,
    DuplicateCertificate,
    NewCertificate,
    NewTransaction,
    Store,
    TransactionExists,
    TransactionState,
)

Factory = Callable[..., NewCertificate]
SUPERSEDED = 4


def _transaction(transaction_id: str = "tx-1", csr: bytes = b"csr-1") -> NewTransaction:
    return NewTransaction(profile="default", transaction_id=transaction_id, message_type=19, csr_der=csr,
                          requester_ip="192.0.2.10", signer_key_sha256="a" * 64, subject_sha256="b" * 64)


def _event(transaction_id: str = "tx-1") -> AuditEvent:
    return AuditEvent(profile="default", operation="PKIOperation", message_type=19, transaction_id=transaction_id,
                      outcome="SUCCESS", detail="issued", requester_ip="192.0.2.10")


def test_an_enrollment_is_stored_issued_with_its_certificate_and_audit_record(
    store: Store, make_certificate: Factory
) -> None:
    store.record_enrollment(_transaction(), make_certificate(0x51, transaction_id="tx-1"), _event())
    record = store.get_transaction("default", "tx-1")
    assert record is not None
    assert (record.state, record.serial, record.csr_sha256) == (
        TransactionState.ISSUED, 0x51, hashlib.sha256(b"csr-1").hexdigest())
    assert record.csr_der is None  # the challenge inside it is not kept
    assert (record.signer_key_sha256, record.subject_sha256, record.requester_ip) == ("a" * 64, "b" * 64, "192.0.2.10")
    certificate = store.get_certificate(0x51)
    assert certificate is not None and certificate.status is CertStatus.VALID
    assert [(e.outcome, e.detail) for e in store.list_operations(transaction_id="tx-1")] == [("SUCCESS", "issued")]


def test_a_stored_transaction_makes_a_second_enrollment_store_nothing(store: Store, make_certificate: Factory) -> None:
    store.record_enrollment(_transaction(), make_certificate(0x52, transaction_id="tx-1"), _event())
    with pytest.raises(TransactionExists):
        store.record_enrollment(_transaction(), make_certificate(0x53, transaction_id="tx-1"), _event())
    assert store.get_certificate(0x53) is None
    assert len(store.list_operations(transaction_id="tx-1")) == 1
    record = store.get_transaction("default", "tx-1")
    assert record is not None and record.serial == 0x52


def test_a_taken_serial_stores_neither_the_transaction_nor_its_audit_record(
    store: Store, make_certificate: Factory
) -> None:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(0x54))
    with pytest.raises(DuplicateCertificate):
        store.record_enrollment(_transaction("tx-2"), make_certificate(0x54, transaction_id="tx-2"), _event("tx-2"))
    assert store.get_transaction("default", "tx-2") is None
    assert store.list_operations(transaction_id="tx-2") == []


def test_concurrent_enrollments_of_one_transaction_store_exactly_one(store: Store, make_certificate: Factory) -> None:
    def attempt(serial: int) -> bool:
        try:
            store.record_enrollment(_transaction("tx-race"), make_certificate(serial, transaction_id="tx-race"),
                                    _event("tx-race"))
        except TransactionExists:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(attempt, range(0x100, 0x108)))
    assert won.count(True) == 1
    record = store.get_transaction("default", "tx-race")
    assert record is not None and record.serial == 0x100 + won.index(True)
    assert len(store.list_operations(transaction_id="tx-race")) == 1


def test_an_enrollment_must_name_its_own_transaction(store: Store, make_certificate: Factory) -> None:
    with pytest.raises(ValueError, match="its profile and transaction"):
        store.record_enrollment(_transaction("tx-3"), make_certificate(0x55, transaction_id="tx-other"), _event())
    assert store.get_certificate(0x55) is None


def test_a_withdrawn_certificate_is_stored_revoked(store: Store, make_certificate: Factory) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.record_withdrawn(make_certificate(0x56, transaction_id="tx-4"), reason=SUPERSEDED, revoked_at=when)
    stored = store.get_certificate(0x56)
    assert stored is not None
    assert (stored.status, stored.revocation_reason, stored.revoked_at) == (CertStatus.REVOKED, SUPERSEDED, when)


def test_transaction_exists_tells_stored_transactions_of_a_profile(store: Store, make_certificate: Factory) -> None:
    assert not store.transaction_exists("default", "tx-5")
    store.record_enrollment(_transaction("tx-5"), make_certificate(0x57, transaction_id="tx-5"), _event("tx-5"))
    assert store.transaction_exists("default", "tx-5")
    assert not store.transaction_exists("other", "tx-5")


def _fail_audit_inserts(store: Store) -> None:
    """Make the database refuse the audit record, the last row an enrollment writes, as a full disk would."""
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER failing_audit BEFORE INSERT ON scep_events "
                              "BEGIN INSERT INTO no_such_table VALUES (1); END"))
            return
        conn.execute(text("CREATE FUNCTION failing_audit() RETURNS trigger LANGUAGE plpgsql AS "
                          "$$ BEGIN RAISE EXCEPTION 'no space left' USING ERRCODE = 'disk_full'; END $$"))
        conn.execute(text("CREATE TRIGGER failing_audit BEFORE INSERT ON scep_events "
                          "FOR EACH ROW EXECUTE FUNCTION failing_audit()"))


def test_a_database_failing_mid_enrollment_stores_none_of_it(store: Store, make_certificate: Factory) -> None:
    _fail_audit_inserts(store)
    with pytest.raises(StoreUnavailable):
        store.record_enrollment(_transaction("tx-6"), make_certificate(0x58, transaction_id="tx-6"), _event("tx-6"))
    assert store.get_certificate(0x58) is None
    assert store.get_transaction("default", "tx-6") is None
    assert not store.transaction_exists("default", "tx-6")
