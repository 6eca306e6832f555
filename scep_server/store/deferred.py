"""Deferred SCEP transactions: PENDING ones whose challenge could not be decided yet (its validator was
unreachable), retried by a background worker instead of the client's next poll.

Workers read the due ones (``due_deferred``) and lease each before retrying it (``lease_deferred``), which
moves its next attempt to the end of the lease: of several workers that saw it due, exactly one retries
it, and if that one dies it is due again when the lease runs out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from scep_server.store.base import Repository, aware, check_page, guard, utcnow
from scep_server.store.records import TransactionRecord
from scep_server.store.tables import transactions
from scep_server.store.transactions import (
    DEFERRED,
    PENDING,
    transaction_key,
    transaction_record,
    update_transaction,
)


class DeferredRepository(Repository):
    """Deferring SCEP transactions and leasing their retries."""

    def defer_transaction(self, *, profile: str, transaction_id: str, next_attempt_at: datetime, error: str) -> None:
        """Leave a PENDING transaction to a background retry at ``next_attempt_at``.

        For a challenge that cannot be decided now (its validator is unreachable): the client is told
        PENDING and keeps polling while the worker retries. Counts the failed attempt and keeps ``error``.
        """
        changes = {**_retry_changes(next_attempt_at, error), "deferred": True}
        with guard(), self._writer.begin() as conn:
            update_transaction(conn, PENDING, profile, transaction_id, changes)

    def due_deferred(self, *, now: datetime, limit: int = 20) -> list[TransactionRecord]:
        """Deferred transactions whose retry is due at ``now``, the longest-waiting first."""
        check_page(limit)
        c = transactions.c
        query = (
            select(transactions)
            .where(DEFERRED, c.next_attempt_at <= aware(now, "now"))
            .order_by(c.next_attempt_at, c.id)
            .limit(limit)
        )
        with guard(), self._engine.connect() as conn:
            return [transaction_record(row) for row in conn.execute(query)]

    def lease_deferred(
        self, *, profile: str, transaction_id: str, expected_next_attempt_at: datetime, lease_until: datetime
    ) -> bool:
        """Take the due retry of a deferred transaction; True for the one caller that got it.

        Moves the next attempt to ``lease_until`` only if it is still at ``expected_next_attempt_at`` (as
        ``due_deferred`` read it): of several workers that saw it due, exactly one wins, and if that one
        dies the transaction is due again when the lease runs out.
        """
        unchanged = (
            transaction_key(profile, transaction_id)
            & DEFERRED
            & (transactions.c.next_attempt_at == aware(expected_next_attempt_at, "expected_next_attempt_at"))
        )
        lease = aware(lease_until, "lease_until")
        with guard(), self._writer.begin() as conn:
            return conn.execute(update(transactions).where(unchanged).values(next_attempt_at=lease)).rowcount == 1

    def reschedule_deferred(self, *, profile: str, transaction_id: str, next_attempt_at: datetime, error: str) -> None:
        """Count another failed retry of a deferred transaction and try again at ``next_attempt_at``."""
        with guard(), self._writer.begin() as conn:
            update_transaction(conn, DEFERRED, profile, transaction_id, _retry_changes(next_attempt_at, error))


    def count_deferred(self) -> int:
        """How many transactions wait for a background retry."""
        query = select(func.count()).select_from(transactions).where(DEFERRED)
        with guard(), self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def list_deferred(self, *, limit: int = 50) -> list[TransactionRecord]:
        """The deferred transactions, the one due first first."""
        check_page(limit)
        c = transactions.c
        query = select(transactions).where(DEFERRED).order_by(c.next_attempt_at, c.id).limit(limit)
        with guard(), self._engine.connect() as conn:
            return [transaction_record(row) for row in conn.execute(query)]


def _retry_changes(next_attempt_at: datetime, error: str) -> dict[str, Any]:
    return {
        "attempts": transactions.c.attempts + 1,
        "next_attempt_at": aware(next_attempt_at, "next_attempt_at"),
        "last_error": error,
        "updated_at": utcnow(),
    }
