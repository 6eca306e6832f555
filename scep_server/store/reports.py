"""Report queries: issued certificates and SCEP events filtered by time, subject, status and outcome.

Each filter is a SQLAlchemy construct, so SQLite and PostgreSQL run the same query. The subject filter
is a case-insensitive substring: both sides go through the database's ``lower()`` (SQLite folds only
ASCII there, PostgreSQL every letter its locale knows), and the LIKE wildcards ``%`` and ``_`` that a
search contains are escaped, so they match themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from scep_server.store.base import Repository, check_page, guard
from scep_server.store.certificates import certificate_record
from scep_server.store.records import CertificateRecord, CertStatus, OperationRecord
from scep_server.store.tables import certificates, scep_events

__all__ = ["CertificateFilter", "CertificateOrder", "EventFilter", "ReportRepository", "like_pattern"]

LIKE_ESCAPE = "\\"
_cert = certificates.c
_event = scep_events.c
# OperationRecord's fields are the table's columns but its id.
_EVENT_COLUMNS = [column for column in scep_events.c if column.name != "id"]


class CertificateOrder(StrEnum):
    NEWEST_FIRST = "newest_first"  # issued_at, newest first (as the listings)
    EXPIRING_FIRST = "expiring_first"  # not_after, soonest first


@dataclass(frozen=True, slots=True)
class CertificateFilter:
    """Which certificates: every given bound must hold. Ranges include their start and exclude their end."""

    issued_since: datetime | None = None
    issued_until: datetime | None = None
    expires_from: datetime | None = None
    expires_before: datetime | None = None
    subject_contains: str | None = None
    status: CertStatus | None = None
    profile: str | None = None
    order: CertificateOrder = CertificateOrder.NEWEST_FIRST
    limit: int = 100


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which audit events: ``outcomes`` any of these (all when empty); newest first."""

    since: datetime | None = None
    until: datetime | None = None
    outcomes: tuple[str, ...] = ()
    profile: str | None = None
    transaction_id: str | None = None
    limit: int = 100


class ReportRepository(Repository):
    """The report queries; read-only."""

    def search_certificates(self, wanted: CertificateFilter) -> list[CertificateRecord]:
        check_page(wanted.limit)
        query = select(certificates).where(*_certificate_conditions(wanted)).limit(wanted.limit)
        with guard(), self._engine.connect() as conn:
            return [certificate_record(row) for row in conn.execute(_ordered(query, wanted.order))]

    def search_events(self, wanted: EventFilter) -> list[OperationRecord]:
        check_page(wanted.limit)
        query = (
            select(*_EVENT_COLUMNS)
            .where(*_event_conditions(wanted))
            .order_by(_event.occurred_at.desc(), _event.id.desc())
            .limit(wanted.limit)
        )
        with guard(), self._engine.connect() as conn:
            return [OperationRecord(**row._mapping) for row in conn.execute(query)]


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own ``%``, ``_`` and escape character taken literally."""
    escaped = text.translate({ord(char): LIKE_ESCAPE + char for char in (LIKE_ESCAPE, "%", "_")})
    return f"%{escaped}%"


def _certificate_conditions(wanted: CertificateFilter) -> list[ColumnElement[bool]]:
    conditions = [
        *_range(_cert.issued_at, wanted.issued_since, wanted.issued_until),
        *_range(_cert.not_after, wanted.expires_from, wanted.expires_before),
    ]
    if wanted.subject_contains is not None:
        pattern = func.lower(literal(like_pattern(wanted.subject_contains)))
        conditions.append(func.lower(_cert.subject).like(pattern, escape=LIKE_ESCAPE))
    if wanted.status is not None:
        conditions.append(_cert.status == CertStatus(wanted.status).value)
    if wanted.profile is not None:
        conditions.append(_cert.profile == wanted.profile)
    return conditions


def _ordered(query: Select[Any], order: CertificateOrder) -> Select[Any]:
    if order is CertificateOrder.EXPIRING_FIRST:
        return query.order_by(_cert.not_after.asc(), _cert.id.asc())
    return query.order_by(_cert.issued_at.desc(), _cert.id.desc())


def _event_conditions(wanted: EventFilter) -> list[ColumnElement[bool]]:
    conditions = _range(_event.occurred_at, wanted.since, wanted.until)
    if wanted.outcomes:
        conditions.append(_event.outcome.in_(wanted.outcomes))
    if wanted.profile is not None:
        conditions.append(_event.profile == wanted.profile)
    if wanted.transaction_id is not None:
        conditions.append(_event.transaction_id == wanted.transaction_id)
    return conditions


def _range(column: ColumnElement[datetime], start: datetime | None, end: datetime | None) -> list[ColumnElement[bool]]:
    """``start <= column < end``, each bound only when given."""
    bounds: list[ColumnElement[bool]] = []
    if start is not None:
        bounds.append(column >= start)
    if end is not None:
        bounds.append(column < end)
    return bounds
