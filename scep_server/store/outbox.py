"""The Intune outbox: notifications that must reach Intune, stored before they are sent.

Each entry is PENDING until it is delivered or given up on (dead). A background worker reads the due
entries (``outbox_due``) and leases each one before sending it (``outbox_lease``), which moves its next
attempt to the end of the lease: of several workers that saw an entry due, only one sends it, and if that
one dies the entry is due again when the lease runs out. The worker then records the delivery, a retry
or the end (``outbox_delivered``, ``outbox_retry``, ``outbox_dead``). An operator may make an entry that
is not delivered due again (``requeue``), a dead one included: it is pending again, its attempts kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update

from scep_server.store.audit_chain import SERVICE, Actor, AuditAction, AuditEntry, append
from scep_server.store.base import Repository, aware, check_length, check_page, guard, required, utcnow
from scep_server.store.records import OutboxEntryNotPending, OutboxRecord
from scep_server.store.tables import OUTBOX_KIND_LENGTH, TRANSACTION_ID_LENGTH, intune_outbox

_c = intune_outbox.c
_PENDING = _c.delivered_at.is_(None) & _c.dead_at.is_(None)


class OutboxRepository(Repository):
    """The outbox methods of ``Store``."""

    def outbox_add(
        self, *, kind: str, transaction_id: str | None, payload: Mapping[str, Any], now: datetime | None = None
    ) -> int:
        """Queue a notification, due at once (at ``now``, default the current time); returns its id."""
        if not kind:
            raise ValueError("kind must not be empty")
        check_length(kind, OUTBOX_KIND_LENGTH, "kind")
        if transaction_id == "":
            raise ValueError("transaction_id must not be empty; pass None for none")
        check_length(transaction_id, TRANSACTION_ID_LENGTH, "transaction_id")
        when = utcnow() if now is None else aware(now, "now")
        row = {
            "kind": kind,
            "transaction_id": transaction_id,
            "payload": _encode_payload(payload),
            "created_at": when,
            "attempts": 0,
            "next_attempt_at": when,
        }
        with guard(), self._writer.begin() as conn:
            inserted = conn.execute(insert(intune_outbox).values(**row)).inserted_primary_key
        return int(required(inserted)[0])

    def outbox_due(self, *, now: datetime, limit: int = 20) -> list[OutboxRecord]:
        """PENDING entries whose next attempt is due at ``now``, the longest-waiting first."""
        check_page(limit)
        query = (
            select(intune_outbox)
            .where(_PENDING, _c.next_attempt_at <= aware(now, "now"))
            .order_by(_c.next_attempt_at, _c.id)
            .limit(limit)
        )
        with guard(), self._engine.connect() as conn:
            return [_outbox_record(row) for row in conn.execute(query)]

    def outbox_lease(self, outbox_id: int, *, expected_next_attempt_at: datetime, lease_until: datetime) -> bool:
        """Take the entry until ``lease_until`` if it is still due at ``expected_next_attempt_at``.

        True for the one caller that got it; False when another took it first or it is no longer PENDING.
        """
        unchanged = (
            (_c.id == outbox_id) & _PENDING & (_c.next_attempt_at == aware(expected_next_attempt_at, "expected"))
        )
        statement = update(intune_outbox).where(unchanged).values(next_attempt_at=aware(lease_until, "lease_until"))
        with guard(), self._writer.begin() as conn:
            return conn.execute(statement).rowcount == 1

    def outbox_delivered(self, outbox_id: int, *, at: datetime) -> None:
        """Mark the PENDING entry delivered; ``OutboxEntryNotPending`` if it is missing or was finished."""
        self._finish(outbox_id, {"delivered_at": aware(at, "at")})

    def outbox_retry(self, outbox_id: int, *, next_attempt_at: datetime, error: str) -> None:
        """Count a failed delivery of the PENDING entry and try again at ``next_attempt_at``."""
        changes = {
            "attempts": _c.attempts + 1,
            "next_attempt_at": aware(next_attempt_at, "next_attempt_at"),
            "last_error": error,
        }
        self._finish(outbox_id, changes)

    def outbox_dead(self, outbox_id: int, *, at: datetime, error: str) -> None:
        """Give up on the PENDING entry after a last failed delivery (counted too); it stays for the record."""
        self._finish(outbox_id, {"dead_at": aware(at, "at"), "attempts": _c.attempts + 1, "last_error": error})

    def outbox_counts(self) -> dict[str, int]:
        """How many entries are pending, delivered and dead."""
        query = select(
            func.count().filter(_PENDING),
            func.count().filter(_c.delivered_at.is_not(None)),
            func.count().filter(_c.delivered_at.is_(None) & _c.dead_at.is_not(None)),
        ).select_from(intune_outbox)
        with guard(), self._engine.connect() as conn:
            pending, delivered, dead = conn.execute(query).one()
        return {"pending": int(pending), "delivered": int(delivered), "dead": int(dead)}

    def list_outbox(self, *, limit: int = 100, include_delivered: bool = False) -> list[OutboxRecord]:
        """The newest entries: pending and dead ones, and delivered ones too if asked for."""
        check_page(limit)
        query = select(intune_outbox).order_by(_c.created_at.desc(), _c.id.desc()).limit(limit)
        if not include_delivered:
            query = query.where(_c.delivered_at.is_(None))
        with guard(), self._engine.connect() as conn:
            return [_outbox_record(row) for row in conn.execute(query)]

    def requeue(self, outbox_id: int, now: datetime, *, actor: Actor = SERVICE) -> bool:
        """Make the entry due at ``now`` if it is not delivered (pending or dead: it is pending again),
        audited as ``actor``'s in the same transaction; False, and nothing changes, for an entry that is
        missing or delivered. A pending entry a worker holds the lease of may be sent twice: its lease is
        given up, and Intune takes a repeated notification as the same one."""
        mine = (_c.id == outbox_id) & _c.delivered_at.is_(None)
        due = {"next_attempt_at": aware(now, "now"), "dead_at": None}
        with guard(), self._writer.begin() as conn:
            row = conn.execute(select(intune_outbox).where(mine)).one_or_none()
            if row is None or conn.execute(update(intune_outbox).where(mine).values(**due)).rowcount != 1:
                return False
            append(conn, _requeue_entry(actor, _outbox_record(row)))
        return True

    def _finish(self, outbox_id: int, changes: Mapping[str, Any]) -> None:
        with guard(), self._writer.begin() as conn:
            _update_pending_entry(conn, outbox_id, changes)


def _update_pending_entry(conn: Connection, outbox_id: int, changes: Mapping[str, Any]) -> None:
    mine = _c.id == outbox_id
    if conn.execute(update(intune_outbox).where(mine & _PENDING).values(**changes)).rowcount == 1:
        return
    row = conn.execute(select(intune_outbox).where(mine)).one_or_none()
    raise OutboxEntryNotPending(outbox_id, None if row is None else _outbox_record(row).state)


def _requeue_entry(actor: Actor, entry: OutboxRecord) -> AuditEntry:
    detail = {"kind": entry.kind, "transaction_id": entry.transaction_id, "state": entry.state.value,
              "attempts": entry.attempts}
    return AuditEntry(actor, AuditAction.OUTBOX_RETRY.value, f"outbox={entry.id}", detail)


def _encode_payload(payload: Mapping[str, Any]) -> str:
    if not isinstance(payload, Mapping) or not all(isinstance(key, str) for key in payload):
        raise ValueError("payload must be a mapping with string keys")
    try:
        return json.dumps(dict(payload), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"payload cannot be stored as JSON: {exc}") from None


def _outbox_record(row: Row[Any]) -> OutboxRecord:
    m = row._mapping
    return OutboxRecord(
        id=m["id"],
        kind=m["kind"],
        transaction_id=m["transaction_id"],
        payload=json.loads(m["payload"]),
        created_at=m["created_at"],
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        delivered_at=m["delivered_at"],
        dead_at=m["dead_at"],
        last_error=m["last_error"],
    )
