"""The hash-chained audit log: every certificate state change appends a row in its own transaction, and
``verify_audit`` finds a row that was edited, deleted from the middle or from the end, whatever wrote it,
while appends from concurrent threads and processes keep one intact chain."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from scep_server.errors import StoreError
from scep_server.store import (
    Actor,
    AlreadyRevoked,
    AuditEntry,
    AuditEvent,
    AuditRecord,
    CertificateNotFound,
    CertStatus,
    NewCertificate,
    NewTransaction,
    Store,
    TransactionNotPending,
)
from scep_server.store.audit_chain import GENESIS_HASH, row_hash
from scep_server.store.tables import audit_log, transactions

Factory = Callable[..., NewCertificate]
ISSUER = "CN=Test CA,O=scep-server"
KEY_COMPROMISE = 1
SUPERSEDED = 4
CESSATION_OF_OPERATION = 5

APPEND_IN_A_PROCESS = """
import sys
from scep_server.store import Actor, AuditEntry, Store
url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Store.open(url) as store:
    assert store.ping()
    print("ready", flush=True)
    sys.stdin.readline()  # every writer starts at once
    for i in range(count):
        store.append_audit(AuditEntry(Actor(name, "test"), "test.note", f"{name}-{i}", {"i": i}))
"""


def _append(store: Store, count: int, name: str = "alice") -> None:
    for i in range(count):
        store.append_audit(AuditEntry(Actor(name, "test"), "test.note", f"{name}-{i}", {"i": i}))


def _execute(store: Store, statement: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement))


def _chain(store: Store) -> list[AuditRecord]:
    return list(reversed(store.list_audit(limit=1000)))


def _serial_subject(serial: int) -> str:
    return f"serial={serial:x} issuer={ISSUER}"


def test_an_empty_log_is_intact(store: Store) -> None:
    report = store.verify_audit()
    assert (report.intact, report.rows, report.head_hash) == (True, 0, GENESIS_HASH)


def test_issuing_and_revoking_append_chained_rows_naming_actor_and_source(
    store: Store, make_certificate: Factory
) -> None:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(0x10))
    revoked_at = datetime.now(UTC)
    store.revoke(0x10, ISSUER, reason=KEY_COMPROMISE, revoked_at=revoked_at, actor=Actor("cli:alice", "cli"))
    with pytest.raises(AlreadyRevoked):
        store.revoke(0x10, ISSUER, reason=KEY_COMPROMISE, revoked_at=revoked_at, actor=Actor("cli:bob", "cli"))
    with pytest.raises(CertificateNotFound):
        store.revoke(0x11, ISSUER, reason=KEY_COMPROMISE, revoked_at=revoked_at)

    issued, revoked = _chain(store)
    assert (issued.id, issued.actor, issued.source, issued.action, issued.subject) == (
        1, "server", "scep", "certificate.issue", _serial_subject(0x10)
    )
    assert json.loads(issued.detail) == {"profile": "default", "transaction_id": None}
    assert (revoked.id, revoked.actor, revoked.source, revoked.action, revoked.subject) == (
        2, "cli:alice", "cli", "certificate.revoke", _serial_subject(0x10)
    )
    assert json.loads(revoked.detail) == {"reason": "keyCompromise"}
    assert (issued.prev_hash, revoked.prev_hash) == (GENESIS_HASH, issued.hash)
    assert all(row.occurred_at.tzinfo is UTC for row in (issued, revoked))
    report = store.verify_audit()
    assert (report.intact, report.rows, report.head_hash) == (True, 2, revoked.hash)


def test_the_hash_covers_every_column_and_the_previous_hash(store: Store) -> None:
    _append(store, 2)
    first, second = _chain(store)
    canonical = json.dumps(
        {"id": 2, "occurred_at": second.occurred_at.isoformat(timespec="microseconds"), "actor": "alice",
         "source": "test", "action": "test.note", "subject": "alice-1", "detail": '{"i":1}',
         "prev_hash": first.hash},
        sort_keys=True, separators=(",", ":"),
    )
    assert second.hash == hashlib.sha256(canonical.encode()).hexdigest()


def test_enrollments_and_withdrawals_are_audited(store: Store, make_certificate: Factory) -> None:
    transaction = NewTransaction(profile="default", transaction_id="tx-at-once", message_type=19, csr_der=b"csr",
                                 requester_ip=None, signer_key_sha256=None, subject_sha256=None)
    event = AuditEvent(profile="default", operation="PKIOperation", message_type=19, transaction_id="tx-at-once",
                       outcome="SUCCESS", detail=None, requester_ip=None)
    store.record_enrollment(transaction, make_certificate(0x20, transaction_id="tx-at-once"), event)
    store.record_withdrawn(make_certificate(0x21, transaction_id="tx-at-once"), reason=SUPERSEDED,
                           revoked_at=datetime.now(UTC))
    csr_sha256 = hashlib.sha256(b"csr-2").hexdigest()
    store.claim_transaction(profile="default", transaction_id="tx-2", message_type=19, csr_der=b"csr-2",
                            requester_ip=None)
    store.record_undelivered(profile="default", transaction_id="tx-2", csr_sha256=csr_sha256,
                             certificate=make_certificate(0x22, transaction_id="tx-2"))
    assert store.withdraw_undelivered(profile="default", transaction_id="tx-2", serial=0x22, issuer=ISSUER,
                                      reason=CESSATION_OF_OPERATION, revoked_at=datetime.now(UTC))
    # Withdrawing a certificate revoked already changes nothing, and appends nothing.
    assert store.withdraw_undelivered(profile="default", transaction_id="tx-2", serial=0x22, issuer=ISSUER,
                                      reason=CESSATION_OF_OPERATION, revoked_at=datetime.now(UTC))

    rows = [(row.action, row.subject, json.loads(row.detail)) for row in _chain(store)]
    assert rows == [
        ("certificate.issue", _serial_subject(0x20), {"profile": "default", "transaction_id": "tx-at-once"}),
        ("certificate.withdraw", _serial_subject(0x21),
         {"profile": "default", "transaction_id": "tx-at-once", "reason": "superseded"}),
        ("certificate.issue", _serial_subject(0x22), {"profile": "default", "transaction_id": "tx-2"}),
        ("certificate.withdraw", _serial_subject(0x22),
         {"profile": "default", "transaction_id": "tx-2", "reason": "cessationOfOperation"}),
    ]
    assert store.verify_audit().rows == 4


def test_an_abandoned_certificate_is_audited_as_withdrawn_by_the_background_worker(
    store: Store, make_certificate: Factory
) -> None:
    store.claim_transaction(profile="default", transaction_id="tx-3", message_type=19, csr_der=b"csr-3",
                            requester_ip=None)
    store.record_undelivered(profile="default", transaction_id="tx-3", csr_sha256=hashlib.sha256(b"csr-3").hexdigest(),
                             certificate=make_certificate(0x30, transaction_id="tx-3"))
    with store.engine.begin() as conn:
        conn.execute(update(transactions).values(updated_at=datetime.now(UTC) - timedelta(days=2)))
    before = datetime.now(UTC) - timedelta(days=1)
    assert store.abandon_transaction(profile="default", transaction_id="tx-3", before=before, fail_info=2,
                                     reason="never collected", revoked_at=datetime.now(UTC)) == 0x30
    withdrawn = _chain(store)[-1]
    assert (withdrawn.actor, withdrawn.source, withdrawn.action, withdrawn.subject) == (
        "server", "jobs", "certificate.withdraw", _serial_subject(0x30)
    )
    assert store.verify_audit().intact


@pytest.mark.parametrize(
    ("column", "value"),
    [("detail", '{"i":99}'), ("actor", "mallory"), ("subject", "alice-9"), ("action", "test.other"),
     ("prev_hash", GENESIS_HASH), ("hash", "f" * 64)],
)
def test_an_edited_row_fails_verification_naming_it(store: Store, column: str, value: str) -> None:
    _append(store, 5)
    with store.engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.id == 3).values({column: value}))
    report = store.verify_audit()
    assert not report.intact and report.problem is not None
    assert report.problem.row_id == 3 and "changed" in report.problem.reason
    assert report.rows == 2


def test_an_edited_timestamp_fails_verification(store: Store) -> None:
    _append(store, 3)
    with store.engine.begin() as conn:
        stored = conn.execute(select(audit_log.c.occurred_at).where(audit_log.c.id == 2)).scalar_one()
        conn.execute(update(audit_log).where(audit_log.c.id == 2).values(occurred_at=stored - timedelta(hours=1)))
    problem = store.verify_audit().problem
    assert problem is not None and problem.row_id == 2


def test_a_row_rewritten_with_a_matching_hash_breaks_the_link_of_the_next(store: Store) -> None:
    _append(store, 4)
    with store.engine.begin() as conn:
        row = dict(conn.execute(select(audit_log).where(audit_log.c.id == 2)).one()._mapping)
        row["detail"] = '{"i":42}'
        conn.execute(update(audit_log).where(audit_log.c.id == 2).values(detail=row["detail"], hash=row_hash(row)))
    problem = store.verify_audit().problem
    assert problem is not None and problem.row_id == 3 and "does not follow row 2" in problem.reason


def test_a_deleted_middle_row_fails_verification(store: Store) -> None:
    _append(store, 5)
    _execute(store, "DELETE FROM audit_log WHERE id = 3")
    problem = store.verify_audit().problem
    assert problem is not None and problem.row_id == 4 and "row 3 was deleted" in problem.reason


def test_deleted_last_rows_fail_verification_by_the_head(store: Store) -> None:
    _append(store, 5)
    _execute(store, "DELETE FROM audit_log WHERE id = 5")
    problem = store.verify_audit().problem
    assert problem is not None and problem.row_id == 5 and "row 5 was deleted" in problem.reason
    _execute(store, "DELETE FROM audit_log WHERE id >= 3")
    problem = store.verify_audit().problem
    assert problem is not None and problem.row_id == 3 and "rows 3-5 were deleted" in problem.reason
    _execute(store, "DELETE FROM audit_log")
    assert not store.verify_audit().intact


def test_an_edited_head_fails_verification(store: Store) -> None:
    _append(store, 2)
    _execute(store, f"UPDATE audit_head SET last_hash = '{'a' * 64}'")
    problem = store.verify_audit().problem
    assert problem is not None and problem.row_id is None and "head" in problem.reason


def test_without_its_head_the_chain_fails_and_no_change_is_stored_unaudited(
    store: Store, make_certificate: Factory
) -> None:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(0x40))
    _execute(store, "DELETE FROM audit_head")
    problem = store.verify_audit().problem
    assert problem is not None and problem.row_id is None and "head is missing" in problem.reason
    with pytest.raises(StoreError, match="head row is missing"):
        store.revoke(0x40, ISSUER, reason=KEY_COMPROMISE, revoked_at=datetime.now(UTC))
    record = store.get_certificate(0x40, ISSUER)
    assert record is not None and record.status is CertStatus.VALID  # rolled back with its audit row


def test_rows_appended_after_a_rolled_back_change_follow_on_without_a_gap(
    store: Store, make_certificate: Factory
) -> None:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(0x50))
    with pytest.raises(TransactionNotPending):  # the certificate, and its audit row, roll back
        store.record_issued(profile="default", transaction_id="missing", certificate=make_certificate(0x51))
    store.revoke(0x50, ISSUER, reason=KEY_COMPROMISE, revoked_at=datetime.now(UTC))
    assert [row.id for row in _chain(store)] == [1, 2]
    assert store.verify_audit().intact


def test_list_audit_pages_newest_first(store: Store) -> None:
    _append(store, 5)
    assert [row.id for row in store.list_audit(limit=2)] == [5, 4]
    assert [row.id for row in store.list_audit(limit=2, offset=3)] == [2, 1]
    with pytest.raises(ValueError):
        store.list_audit(limit=0)


def test_concurrent_threads_keep_one_intact_chain(store: Store) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda name: _append(store, 25, name), ["t1", "t2", "t3", "t4"]))
    report = store.verify_audit()
    assert (report.intact, report.rows) == (True, 100), report.problem
    assert [row.id for row in _chain(store)] == list(range(1, 101))


def test_concurrent_processes_keep_one_intact_chain(store: Store, db_url: str) -> None:
    argv = [sys.executable, "-c", APPEND_IN_A_PROCESS, db_url]
    children = [
        subprocess.Popen([*argv, name, "50"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for name in ("p1", "p2", "p3")
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    _append(store, 50, "parent")
    errors = [child.communicate(timeout=120)[1] for child in children]
    failures = [error for child, error in zip(children, errors, strict=True) if child.returncode != 0]
    assert not failures, failures
    report = store.verify_audit()
    assert (report.intact, report.rows) == (True, 200), report.problem
    by_actor: dict[str, list[str]] = {}
    for row in _chain(store):
        by_actor.setdefault(row.actor, []).append(row.subject)
    assert by_actor == {name: [f"{name}-{i}" for i in range(50)] for name in ("p1", "p2", "p3", "parent")}


def test_an_unreadable_value_is_reported_not_raised(tmp_path: Path) -> None:
    """SQLite keeps whatever text is written into a timestamp column; PostgreSQL refuses it."""
    with Store.open(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        store.migrate()
        _append(store, 3)
        _execute(store, "UPDATE audit_log SET occurred_at = 'yesterday' WHERE id = 2")
        problem = store.verify_audit().problem
        assert problem is not None and "after row 1 cannot be read" in problem.reason
        with pytest.raises(StoreError, match="cannot be read"):
            store.list_audit()
