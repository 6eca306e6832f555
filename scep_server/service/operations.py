"""The operators' view of the server's background work: what waits, what failed, what expires.

:meth:`Operations.status` gathers, from the store and the expiry radar, what an operator checks when
devices report trouble: Intune notifications not delivered yet or given up on (the outbox), SCEP
transactions waiting for a validator to come back (deferred), the Intune revocation sync, and when the
server's own credentials run out. It reads only the store and local files (the radar's ``local_only``
survey): asking for it never waits on Intune or Graph. :meth:`Operations.retry_outbox` makes one
notification due again, audited.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from scep_server.service.expiry import CredentialExpiry, ExpiryRadar
from scep_server.store import Actor, OutboxRecord, Store, TransactionRecord

__all__ = ["LISTED_ENTRIES", "Operations"]

LISTED_ENTRIES = 50  # outbox entries and deferred transactions a status lists at most


class Operations:
    """Status and repair of the background work over one store; ``now`` is the clock (UTC-aware)."""

    def __init__(
        self, store: Store, radar: ExpiryRadar | None, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._store = store
        self._radar = radar
        self._now = now

    def status(self) -> dict[str, Any]:
        """The status as JSON-ready values (see the module doc); lists are at most ``LISTED_ENTRIES`` long."""
        return {
            "taken_at": self._now().isoformat(),
            "outbox": self._outbox(),
            "deferred": self._deferred(),
            "revocation_sync": self._revocation_sync(),
            "expiry": self._expiry(),
        }

    def retry_outbox(self, outbox_id: int, *, actor: str, source: str) -> bool:
        """Make a dead or pending outbox entry due now (its attempts kept), audited as ``actor``'s through
        ``source`` (action ``outbox.retry``) in the same transaction; False when there is no such entry
        (missing or delivered). ``ValueError`` for an id that is not a positive whole number."""
        if isinstance(outbox_id, bool) or not isinstance(outbox_id, int) or outbox_id < 1:
            raise ValueError(f"outbox_id must be a positive whole number, not {outbox_id!r}")
        if not actor or not source:
            raise ValueError("actor and source must not be empty")
        return self._store.outbox.requeue(outbox_id, self._now(), actor=Actor(actor, source))

    def _outbox(self) -> dict[str, Any]:
        counts = self._store.outbox_counts()
        entries = self._store.list_outbox(limit=LISTED_ENTRIES)
        return {**counts, "entries": [_outbox_entry(entry) for entry in entries]}

    def _deferred(self) -> dict[str, Any]:
        deferred = self._store.deferred
        entries = deferred.list_deferred(limit=LISTED_ENTRIES)
        return {"count": deferred.count_deferred(), "entries": [_deferred_entry(entry) for entry in entries]}

    def _revocation_sync(self) -> dict[str, Any]:
        summary = self._store.intune_revocations.revocation_sync_summary()
        return {
            "last_received_at": _iso(summary.last_received_at),
            "last_processed_at": _iso(summary.last_processed_at),
            "last_uploaded_at": _iso(summary.last_uploaded_at),
            "awaiting_upload": summary.awaiting_upload,
            "results": {str(code): count for code, count in sorted(summary.results.items())},
        }

    def _expiry(self) -> list[dict[str, Any]]:
        if self._radar is None:
            return []
        return [_expiry_entry(expiry) for expiry in self._radar.survey(local_only=True)]


def _outbox_entry(entry: OutboxRecord) -> dict[str, Any]:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "transaction_id": entry.transaction_id,
        "attempts": entry.attempts,
        "created_at": entry.created_at.isoformat(),
        "next_attempt_at": entry.next_attempt_at.isoformat(),
        "dead_at": _iso(entry.dead_at),
        "last_error": entry.last_error,
        "state": entry.state.value,
    }


def _deferred_entry(transaction: TransactionRecord) -> dict[str, Any]:
    return {
        "profile": transaction.profile,
        "transaction_id": transaction.transaction_id,
        "attempts": transaction.attempts,
        "next_attempt_at": _iso(transaction.next_attempt_at),
        "last_error": transaction.last_error,
    }


def _expiry_entry(expiry: CredentialExpiry) -> dict[str, Any]:
    days_left = expiry.days_left
    return {
        "credential": expiry.credential,
        "not_after": _iso(expiry.not_after),
        "days_left": None if days_left is None else round(days_left, 2),
        "expired": expiry.expired,
        "problem": expiry.problem,
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
