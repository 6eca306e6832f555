"""SCEP transactions: claiming a (profile, transactionID), failing it, reading it, and the statements the
other transaction pieces (``deferred.py``, ``deliveries.py``) share.

Races between handlers of one transaction are settled without long locks: a claim inserts the row (the
unique constraint picks one winner) or resets it only if it is unchanged since it was read, with
``updated_at`` as the row's version; every other change is a conditional update on the state it needs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from scep_server.errors import StoreError, StoreUnavailable
from scep_server.store.audit_chain import SCEP, AuditAction, append
from scep_server.store.base import RACE_ATTEMPTS, Repository, check_length, guard, utcnow
from scep_server.store.certificates import VALID_CERT
from scep_server.store.records import TransactionNotPending, TransactionRecord, TransactionState
from scep_server.store.revocations import UNDELIVERED_REASON, revocation, revocation_entry
from scep_server.store.serials import serial_hex
from scep_server.store.tables import (
    DIGEST_LENGTH,
    IP_LENGTH,
    PROFILE_LENGTH,
    TRANSACTION_ID_LENGTH,
    certificates,
    transactions,
)

log = logging.getLogger(__name__)

PENDING = transactions.c.state == TransactionState.PENDING.value
ISSUED = transactions.c.state == TransactionState.ISSUED.value
DEFERRED = PENDING & transactions.c.deferred
_EXISTS = select(transactions.c.id).where(
    transactions.c.profile == bindparam("profile"), transactions.c.transaction_id == bindparam("transaction_id")
)


class TransactionRepository(Repository):
    """Claiming, failing and reading SCEP transactions."""

    def claim_transaction(
        self,
        *,
        profile: str,
        transaction_id: str,
        message_type: int,
        csr_der: bytes,
        requester_ip: str | None,
        signer_key_sha256: str | None = None,
        subject_sha256: str | None = None,
        stale_after: timedelta = timedelta(minutes=5),
    ) -> tuple[TransactionRecord, bool]:
        """Start (or restart) the transaction; the flag is True for the one caller that should decide it.

        A new id is inserted PENDING. An existing row is returned unchanged with False, unless it FAILED
        or has been PENDING, not deferred, longer than ``stale_after`` (its handler presumably died): then
        it is reset to PENDING with this CSR and True. A deferred transaction is never stale, its retries
        belong to the background worker. Concurrent claims of one id: exactly one gets True.

        A stale transaction claimed again for the same CSR keeps the certificate stored for it and not
        delivered (``record.serial``, still valid): the claimer delivers that one, never a second. Every
        other valid certificate stored for this (profile, transaction_id) was never delivered and is
        revoked (cessationOfOperation) in the same database transaction. ``signer_key_sha256`` and
        ``subject_sha256`` say who may poll the transaction (see ``TransactionRecord``).
        """
        check_key(profile, transaction_id)
        check_length(requester_ip, IP_LENGTH, "requester_ip")
        for digest in (signer_key_sha256, subject_sha256):
            check_length(digest, DIGEST_LENGTH, "digest")
        values = claim_values(message_type, csr_der, requester_ip, signer_key_sha256, subject_sha256)
        with guard():
            for _ in range(RACE_ATTEMPTS):
                outcome = self._try_claim(profile, transaction_id, values, stale_after)
                if outcome is not None:
                    return outcome
        raise StoreUnavailable(f"claims of transaction {transaction_id!r} kept colliding; retry later")

    def record_failure(self, *, profile: str, transaction_id: str, fail_info: int, reason: str) -> None:
        """Mark a PENDING transaction FAILED (failInfo: RFC 8894 §3.2.1.4.5); a later claim may retry it."""
        changes = {
            "state": TransactionState.FAILED.value,
            "fail_info": fail_info,
            "fail_reason": reason,
            "deferred": False,
            "csr_der": None,
            "updated_at": utcnow(),
        }
        with guard(), self._writer.begin() as conn:
            update_transaction(conn, PENDING, profile, transaction_id, changes)

    def fail_issued_transaction(self, *, profile: str, transaction_id: str, fail_info: int, reason: str) -> None:
        """Turn an ISSUED transaction FAILED, keeping its serial: the certificate was withdrawn after issuance.

        That happens when Intune could not be told of the issuance; the client's next poll then gets
        FAILURE instead of a certificate Intune does not know about. ``TransactionNotPending`` carries the
        state found if the transaction is not ISSUED.
        """
        changes = {
            "state": TransactionState.FAILED.value,
            "fail_info": fail_info,
            "fail_reason": reason,
            "deferred": False,
            "updated_at": utcnow(),
        }
        with guard(), self._writer.begin() as conn:
            update_transaction(conn, ISSUED, profile, transaction_id, changes)

    def transaction_exists(self, profile: str, transaction_id: str) -> bool:
        """Whether the transaction is stored, in whatever state (cheaper than reading it)."""
        with guard(), self._engine.connect() as conn:
            return conn.execute(_EXISTS, {"profile": profile, "transaction_id": transaction_id}).first() is not None

    def get_transaction(self, profile: str, transaction_id: str) -> TransactionRecord | None:
        with guard(), self._engine.connect() as conn:
            return fetch_transaction(conn, profile, transaction_id)

    def _try_claim(
        self, profile: str, transaction_id: str, values: Mapping[str, Any], stale_after: timedelta
    ) -> tuple[TransactionRecord, bool] | None:
        """One attempt of ``claim_transaction``; None when it lost a race and must look again."""
        try:
            with self._writer.begin() as conn:
                existing = fetch_transaction(conn, profile, transaction_id)
                now = utcnow()
                if existing is None:
                    conn.execute(
                        insert(transactions).values(
                            profile=profile, transaction_id=transaction_id, created_at=now, updated_at=now, **values
                        )
                    )
                elif not _reclaimable(existing, now, stale_after):
                    return existing, False
                elif not _reclaim(conn, existing, values, now):
                    return None
                claimed = fetch_transaction(conn, profile, transaction_id)
        except IntegrityError:
            return None
        if claimed is None:  # pragma: no cover - the row was written in this very transaction
            raise StoreError("claimed transaction vanished")
        return claimed, True


# -- statements run inside a caller's transaction --------------------------------------------------


def check_key(profile: str, transaction_id: str) -> None:
    if not profile or not transaction_id:
        raise ValueError("profile and transaction_id must not be empty")
    check_length(profile, PROFILE_LENGTH, "profile")
    check_length(transaction_id, TRANSACTION_ID_LENGTH, "transaction_id")


def transaction_key(profile: str, transaction_id: str) -> ColumnElement[bool]:
    return (transactions.c.profile == profile) & (transactions.c.transaction_id == transaction_id)


def fetch_transaction(conn: Connection, profile: str, transaction_id: str) -> TransactionRecord | None:
    row = conn.execute(select(transactions).where(transaction_key(profile, transaction_id))).one_or_none()
    return None if row is None else transaction_record(row)


def update_transaction(
    conn: Connection, condition: ColumnElement[bool], profile: str, transaction_id: str, changes: Mapping[str, Any]
) -> None:
    """Apply ``changes`` if the transaction meets ``condition``, else raise ``TransactionNotPending``."""
    mine = transaction_key(profile, transaction_id) & condition
    if conn.execute(update(transactions).where(mine).values(**changes)).rowcount == 1:
        return
    current = fetch_transaction(conn, profile, transaction_id)
    raise TransactionNotPending(profile, transaction_id, None if current is None else current.state)


def next_version(existing: TransactionRecord, now: datetime) -> datetime:
    # updated_at is the row's version: never reuse the old value, even within one clock tick.
    return max(now, existing.updated_at + timedelta(microseconds=1))


def transaction_record(row: Row[Any]) -> TransactionRecord:
    m = row._mapping
    return TransactionRecord(
        profile=m["profile"],
        transaction_id=m["transaction_id"],
        message_type=m["message_type"],
        state=TransactionState(m["state"]),
        csr_sha256=m["csr_sha256"],
        csr_der=None if m["csr_der"] is None else bytes(m["csr_der"]),
        serial=None if m["serial_hex"] is None else int(m["serial_hex"], 16),
        fail_info=m["fail_info"],
        fail_reason=m["fail_reason"],
        requester_ip=m["requester_ip"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        deferred=bool(m["deferred"]),
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        last_error=m["last_error"],
        signer_key_sha256=m["signer_key_sha256"],
        subject_sha256=m["subject_sha256"],
    )


# -- claiming ----------------------------------------------------------------------------------------


def claim_values(
    message_type: int, csr_der: bytes, requester_ip: str | None, signer_key_sha256: str | None,
    subject_sha256: str | None,
) -> dict[str, Any]:
    """The columns a claim sets, on a new row and on a reclaimed one alike."""
    return {
        "message_type": message_type,
        "state": TransactionState.PENDING.value,
        "csr_sha256": hashlib.sha256(csr_der).hexdigest(),
        "csr_der": csr_der,
        "serial_hex": None,
        "certificate_id": None,
        "fail_info": None,
        "fail_reason": None,
        "requester_ip": requester_ip,
        "deferred": False,
        "attempts": 0,
        "next_attempt_at": None,
        "last_error": None,
        "signer_key_sha256": signer_key_sha256,
        "subject_sha256": subject_sha256,
    }


def _reclaimable(existing: TransactionRecord, now: datetime, stale_after: timedelta) -> bool:
    if existing.state is TransactionState.FAILED:
        return True
    if existing.state is not TransactionState.PENDING or existing.deferred:
        return False
    return existing.updated_at < now - stale_after


def _reclaim(conn: Connection, existing: TransactionRecord, values: Mapping[str, Any], now: datetime) -> bool:
    """Reset ``existing`` for a new claim (see ``claim_transaction``); False if someone changed it first."""
    kept = _undelivered_to_keep(conn, existing, values["csr_sha256"])
    if not _reset_transaction(conn, existing, {**values, **kept}, now):
        return False
    _revoke_orphans(conn, existing.profile, existing.transaction_id, kept.get("certificate_id"))
    return True


def _undelivered_to_keep(conn: Connection, existing: TransactionRecord, csr_sha256: str) -> dict[str, Any]:
    """The link a reclaim keeps: the certificate of a PENDING transaction asked again for the same CSR,
    while that certificate is valid. Anything else starts afresh."""
    if existing.state is not TransactionState.PENDING or existing.serial is None or existing.csr_sha256 != csr_sha256:
        return {}
    query = (
        select(certificates.c.id)
        .join(transactions, transactions.c.certificate_id == certificates.c.id)
        .where(transaction_key(existing.profile, existing.transaction_id), VALID_CERT)
    )
    cert_id = conn.execute(query).scalar_one_or_none()
    return {} if cert_id is None else {"serial_hex": serial_hex(existing.serial), "certificate_id": cert_id}


def _revoke_orphans(conn: Connection, profile: str, transaction_id: str, keep: int | None) -> None:
    """Revoke the valid certificates stored for this transaction but ``keep``: none of them was delivered."""
    c = certificates.c
    orphan = (c.profile == profile) & (c.transaction_id == transaction_id) & VALID_CERT
    if keep is not None:
        orphan &= c.id != keep
    orphans = list(conn.execute(select(c.serial_hex, c.issuer).where(orphan)))
    if not orphans:
        return
    conn.execute(update(certificates).where(orphan).values(**revocation(UNDELIVERED_REASON, utcnow())))
    for serial, issuer in orphans:
        append(conn, revocation_entry(SCEP, AuditAction.CERTIFICATE_WITHDRAW, int(serial, 16), issuer,
                                      UNDELIVERED_REASON, profile=profile, transaction_id=transaction_id))
    log.warning("transaction %r of profile %r reclaimed: revoked its undelivered certificate(s) %s",
                transaction_id, profile, ", ".join(serial for serial, _ in orphans))


def _reset_transaction(conn: Connection, existing: TransactionRecord, values: Mapping[str, Any], now: datetime) -> bool:
    """Reset ``existing`` unless someone changed it since it was read; True if this call won."""
    new_version = next_version(existing, now)
    unchanged = (
        transaction_key(existing.profile, existing.transaction_id)
        & (transactions.c.state == existing.state.value)
        & (transactions.c.deferred == existing.deferred)
        & (transactions.c.updated_at == existing.updated_at)
    )
    statement = update(transactions).where(unchanged).values(updated_at=new_version, **values)
    return conn.execute(statement).rowcount == 1
