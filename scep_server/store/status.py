"""Read-only counts and times for the server's own metrics (/metrics computes them when it is scraped).

Each is one query served by an index, so a scrape costs the same with ten certificates or ten million:
the outbox's pending and dead entries (``delivered_at, dead_at, ...`` index), the deferred transactions
(``deferred, next_attempt_at``) and the newest CRL's times (``issuer, crl_number``). All of them run on
one pooled connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, Select, func, select

from scep_server.store.base import guard
from scep_server.store.tables import intune_outbox, published_crls, transactions
from scep_server.store.transactions import DEFERRED

__all__ = ["CrlTimes", "StatusQueries", "StoreSnapshot"]

_outbox = intune_outbox.c
_crls = published_crls.c
_UNDELIVERED = _outbox.delivered_at.is_(None)
_OUTBOX_PENDING = select(func.count()).select_from(intune_outbox).where(_UNDELIVERED, _outbox.dead_at.is_(None))
_OUTBOX_DEAD = select(func.count()).select_from(intune_outbox).where(_UNDELIVERED, _outbox.dead_at.is_not(None))
_DEFERRED = select(func.count()).select_from(transactions).where(DEFERRED)


@dataclass(frozen=True, slots=True)
class CrlTimes:
    """thisUpdate and nextUpdate of an issuer's newest stored CRL."""

    this_update: datetime
    next_update: datetime


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What the store says now: Intune notifications still to deliver and given up on, PENDING transactions
    left to the background retries, and the newest CRL (None before the first is published)."""

    outbox_pending: int
    outbox_dead: int
    deferred: int
    crl: CrlTimes | None


class StatusQueries:
    """The queries; StoreError (StoreUnavailable when it may pass) when the database cannot answer."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def snapshot(self, issuer: str) -> StoreSnapshot:
        with guard(), self._engine.connect() as conn:
            return StoreSnapshot(
                outbox_pending=_count(conn, _OUTBOX_PENDING), outbox_dead=_count(conn, _OUTBOX_DEAD),
                deferred=_count(conn, _DEFERRED), crl=_newest_crl(conn, issuer),
            )


def _count(conn: Connection, query: Select[int]) -> int:
    return int(conn.execute(query).scalar_one())


def _newest_crl(conn: Connection, issuer: str) -> CrlTimes | None:
    query = select(_crls.this_update, _crls.next_update).where(_crls.issuer == issuer)
    row = conn.execute(query.order_by(_crls.crl_number.desc()).limit(1)).one_or_none()
    return None if row is None else CrlTimes(row.this_update, row.next_update)
