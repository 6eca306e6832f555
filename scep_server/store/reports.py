"""Report queries: issued certificates and SCEP events filtered by time, subject, status and outcome.

Each filter is a SQLAlchemy construct, so SQLite and PostgreSQL run the same query. The subject filter
is a case-insensitive substring: both sides go through the database's ``lower()`` (SQLite folds only
ASCII there, PostgreSQL every letter its locale knows), and the LIKE wildcards ``%`` and ``_`` that a
search contains are escaped, so they match themselves. The SAN filters read the ``sans`` column, a JSON
array of ``kind:value`` strings: the text searched for is JSON-encoded the same way first, so a quote, a
backslash or a letter beyond ASCII in it matches the character itself and never the array's syntax.

Listings newest first page by keyset: ``before`` (issued_at, id) keeps the rows that sort after the last
one of the page before (see ``service/paging.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, and_, func, literal, or_, select
from sqlalchemy.sql.elements import ColumnElement

from scep_server.store.base import Repository, check_page, guard
from scep_server.store.certificates import certificate_record
from scep_server.store.records import CertificateRecord, CertStatus, OperationRecord
from scep_server.store.tables import certificates, scep_events

__all__ = [
    "INTUNE_DEVICE_URI",
    "CertificateFilter",
    "CertificateOrder",
    "EventFilter",
    "KeyedCertificate",
    "ReportRepository",
    "like_pattern",
]

LIKE_ESCAPE = "\\"
INTUNE_DEVICE_URI = "uri:IntuneDeviceId://"  # how a SAN naming the Intune device is stored (ca/csr.py)
_THUMBPRINT_LENGTHS = (40, 64)  # hex SHA-1, hex SHA-256
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
    serial: str | None = None  # serial_hex form: lowercase hex without leading zeros
    san_contains: str | None = None  # a substring of any SAN (``dns:host.example``), any case
    thumbprint: str | None = None  # hex SHA-1 (40 digits) or SHA-256 (64 digits), without separators
    device_id: str | None = None  # the bound device (any kind), or the id of a SAN ``uri:IntuneDeviceId://<id>``
    before: tuple[datetime, int] | None = None  # (issued_at, id) of the last row seen; NEWEST_FIRST only


@dataclass(frozen=True, slots=True)
class KeyedCertificate:
    """A certificate and its row id, the tiebreak of its place in a listing (its cursor's second half)."""

    row_id: int
    record: CertificateRecord


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
        return [keyed.record for keyed in self.search_keyed_certificates(wanted)]

    def search_keyed_certificates(self, wanted: CertificateFilter) -> list[KeyedCertificate]:
        """The matching certificates with their row ids, in ``wanted.order``."""
        check_page(wanted.limit)
        if wanted.before is not None and wanted.order is not CertificateOrder.NEWEST_FIRST:
            raise ValueError("before pages a listing newest first only")
        query = select(certificates).where(*_certificate_conditions(wanted)).limit(wanted.limit)
        with guard(), self._engine.connect() as conn:
            rows = conn.execute(_ordered(query, wanted.order))
            return [KeyedCertificate(int(row.id), certificate_record(row)) for row in rows]

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
    return conditions + _identity_conditions(wanted) + _keyset(wanted.before)


def _identity_conditions(wanted: CertificateFilter) -> list[ColumnElement[bool]]:
    """The filters that single out one certificate or device: serial, thumbprint, SANs."""
    conditions: list[ColumnElement[bool]] = []
    if wanted.serial is not None:
        conditions.append(_cert.serial_hex == wanted.serial)
    if wanted.thumbprint is not None:
        conditions.append(_thumbprint_condition(wanted.thumbprint))
    if wanted.san_contains is not None:
        conditions.append(_sans_like(like_pattern(_json_text(wanted.san_contains))))
    if wanted.device_id is not None:
        # The device the certificate was bound to when it was stored (any kind, ids kept lowercase), or,
        # for one stored before device binding, the whole quoted SAN element naming the Intune device.
        conditions.append(or_(
            _cert.device_id == wanted.device_id.lower(),
            _sans_like(like_pattern(json.dumps(INTUNE_DEVICE_URI + wanted.device_id))),
        ))
    return conditions


def _thumbprint_condition(thumbprint: str) -> ColumnElement[bool]:
    if len(thumbprint) not in _THUMBPRINT_LENGTHS:
        raise ValueError("thumbprint must be 40 (SHA-1) or 64 (SHA-256) hex digits")
    column = _cert.sha1_thumbprint if len(thumbprint) == _THUMBPRINT_LENGTHS[0] else _cert.sha256_thumbprint
    # Stored in one case (issuance writes upper case): comparing both keeps the column's own values.
    return column.in_(sorted({thumbprint.lower(), thumbprint.upper()}))


def _sans_like(pattern: str) -> ColumnElement[bool]:
    return func.lower(_cert.sans).like(func.lower(literal(pattern)), escape=LIKE_ESCAPE)


def _json_text(text: str) -> str:
    """``text`` as it appears inside a JSON string of the ``sans`` column (``json.dumps``'s escapes)."""
    return json.dumps(text)[1:-1]


def _keyset(before: tuple[datetime, int] | None) -> list[ColumnElement[bool]]:
    """(issued_at, id) < ``before``, spelled out: SQLite and PostgreSQL then use the (issued_at, id) index."""
    if before is None:
        return []
    moment, row_id = before
    return [or_(_cert.issued_at < moment, and_(_cert.issued_at == moment, _cert.id < row_id))]


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
