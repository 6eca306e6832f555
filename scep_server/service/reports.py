"""Reports for operators: which certificates were issued, which expire soon, which requests failed and why.

The CLI's ``certs list``, ``certs expiring`` and ``events list`` read them; the values they take are
parsed here, so every surface understands a time the same way: a duration back from now (``7d``,
``24h``, ``30m``) or an ISO 8601 time with its zone. A report's rows come as JSON-ready dicts
(:func:`certificate_row`, :func:`event_row`) and as JSON or CSV text (:func:`to_json`, :func:`to_csv`).
Bad input is a ``ValueError`` whose message names the option and says what was expected.

The admin API and the console page through certificates, revocations and the audit log by cursor
(:meth:`Reports.certificate_page`, :meth:`Reports.revocations`, :meth:`Reports.audit`; see ``paging.py``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

from scep_server.pki.names import printable
from scep_server.pki.reasons import CRLReason
from scep_server.scep.types import MessageType
from scep_server.service.audit_listing import AuditQuery, RevocationQuery, audit_page, revocation_page
from scep_server.service.certificates import describe, device_fields, parse_serial
from scep_server.service.outcome import OperationStatus
from scep_server.service.paging import CursorPage, check_limit, decode_cursor, page_of
from scep_server.store import CertificateRecord, CertStatus, OperationRecord, Store, serial_hex, serial_storable
from scep_server.store.reports import CertificateFilter, CertificateOrder, EventFilter, KeyedCertificate

__all__ = [
    "CERTIFICATE_COLUMNS",
    "EVENT_COLUMNS",
    "OUTCOMES",
    "REPORT_STATUSES",
    "AuditQuery",
    "CertificateQuery",
    "CertificateSearch",
    "EventSearch",
    "ReportPage",
    "ReportStatus",
    "Reports",
    "RevocationQuery",
    "certificate_filter",
    "certificate_row",
    "event_row",
    "parse_duration",
    "parse_outcome",
    "parse_range",
    "parse_time",
    "to_csv",
    "to_json",
]

T = TypeVar("T")

_DURATION = re.compile(r"(\d{1,9})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_FAILURE = "FAILURE:"
# What a spreadsheet would start a formula with (OWASP's CSV injection list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_THUMBPRINT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
MAX_SEARCH_LENGTH = 1024  # of a subject, SAN or device id searched for


class ReportStatus(StrEnum):
    """A certificate's state now: ``expired`` once its notAfter has passed, revoked or not."""

    VALID = "valid"  # not revoked, not expired
    REVOKED = "revoked"
    EXPIRED = "expired"


REPORT_STATUSES = tuple(status.value for status in ReportStatus)
OUTCOMES = ("success", "pending", "failure", *(
    status.value.removeprefix(_FAILURE).lower() for status in OperationStatus if status.value.startswith(_FAILURE)
))

CERTIFICATE_COLUMNS = (
    "serial", "issuer", "subject", "sans", "profile", "status", "expired", "not_before", "not_after",
    "issued_at", "revoked_at", "revocation_reason", "transaction_id", "sha1_thumbprint", "sha256_thumbprint",
    "device_id", "device_id_kind", "device_hold_at",
)
EVENT_COLUMNS = (
    "occurred_at", "outcome", "profile", "operation", "message_type", "transaction_id", "requester_ip", "detail",
)


@dataclass(frozen=True, slots=True)
class CertificateSearch:
    """Certificates issued in ``[issued_since, issued_until)`` whose subject contains ``subject`` (any case)."""

    issued_since: datetime | None = None
    issued_until: datetime | None = None
    subject: str | None = None
    status: ReportStatus | None = None
    profile: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class CertificateQuery:
    """A page of the certificates matching every given filter, newest first (issued_at, then id).

    ``serial`` as a number or as people write it (hex, ``0x``, ``:``); ``subject`` and ``san`` are
    substrings, any case; ``thumbprint`` a hex SHA-1 (40 digits) or SHA-256 (64 digits), any case, ``:``
    allowed; ``device_id`` the device the certificate is bound to (Intune or Entra ID id), or for one
    stored before device binding the id its SAN ``IntuneDeviceId://<id>`` names (the whole id, any case).
    Issued in ``[issued_since, issued_until)``; notAfter before ``expires_before``. ``cursor``:
    the previous page's ``next_cursor``.
    """

    serial: int | str | None = None
    subject: str | None = None
    san: str | None = None
    thumbprint: str | None = None
    profile: str | None = None
    status: ReportStatus | None = None
    issued_since: datetime | None = None
    issued_until: datetime | None = None
    expires_before: datetime | None = None
    device_id: str | None = None
    cursor: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class EventSearch:
    """SCEP events in ``[since, until)`` with any of ``outcomes`` (stored values: see :func:`parse_outcome`),
    or any outcome when there are none."""

    since: datetime | None = None
    until: datetime | None = None
    outcomes: tuple[str, ...] = ()
    profile: str | None = None
    transaction_id: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class ReportPage(Generic[T]):
    """The first ``limit`` matches, whether more matched, and the time the report was taken at."""

    rows: list[T]
    more: bool
    taken_at: datetime


class Reports:
    """The report queries over one store; ``now`` is the clock (UTC-aware)."""

    def __init__(self, store: Store, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._now = now

    def certificates(self, search: CertificateSearch) -> ReportPage[CertificateRecord]:
        """Matching certificates, newest first."""
        now = self._now()
        wanted = CertificateFilter(
            issued_since=search.issued_since, issued_until=search.issued_until, subject_contains=search.subject,
            profile=search.profile, limit=_checked_limit(search.limit) + 1, **_status_bounds(search.status, now),
        )
        return _page(self._store.search_certificates(wanted), search.limit, now)

    def expiring(
        self, within: timedelta, *, profile: str | None = None, limit: int = 100
    ) -> ReportPage[CertificateRecord]:
        """Valid certificates whose notAfter comes within ``within`` from now, soonest first."""
        if within <= timedelta(0):
            raise ValueError(f"the window must be positive, not {within}")
        now = self._now()
        wanted = CertificateFilter(
            status=CertStatus.VALID, expires_from=now, expires_before=_shifted(now, within, "the window"),
            profile=profile, order=CertificateOrder.EXPIRING_FIRST, limit=_checked_limit(limit) + 1,
        )
        return _page(self._store.search_certificates(wanted), limit, now)

    def certificate_page(self, query: CertificateQuery) -> CursorPage[CertificateRecord]:
        """A page of the matching certificates, newest first; ``ValueError`` naming a bad parameter."""
        wanted = certificate_filter(query, self._now())
        keyed = self._store.reports.search_keyed_certificates(wanted)
        page = page_of(keyed, query.limit, _certificate_key)
        return CursorPage([row.record for row in page.items], page.next_cursor)

    def revocations(self, query: RevocationQuery) -> CursorPage[dict[str, Any]]:
        """Revocations and withdrawals as the audit log recorded them, newest first (see ``audit_listing``)."""
        return revocation_page(self._store, query)

    def audit(self, query: AuditQuery) -> CursorPage[dict[str, Any]]:
        """A page of the hash-chained audit log, newest first (see ``audit_listing``)."""
        return audit_page(self._store, query)

    def events(self, search: EventSearch) -> ReportPage[OperationRecord]:
        """Matching SCEP PKIOperation events, newest first."""
        wanted = EventFilter(
            since=search.since, until=search.until, profile=search.profile, transaction_id=search.transaction_id,
            outcomes=search.outcomes, limit=_checked_limit(search.limit) + 1,
        )
        return _page(self._store.search_events(wanted), search.limit, self._now())


def certificate_filter(query: CertificateQuery, now: datetime) -> CertificateFilter:
    """The store filter of a page of ``query`` at ``now``: one more row than the page, to tell whether
    more follow; ``ValueError`` naming the first bad parameter."""
    status = _report_status(query.status)
    bounds = _status_bounds(status, now)
    since, until = _aware(query.issued_since, "issued_since"), _aware(query.issued_until, "issued_until")
    if since is not None and until is not None and since >= until:
        raise ValueError(f"issued_since {since.isoformat()} is not before issued_until {until.isoformat()}")
    expires_before = _earliest(bounds.pop("expires_before", None), _aware(query.expires_before, "expires_before"))
    return CertificateFilter(
        issued_since=since, issued_until=until, expires_before=expires_before, profile=query.profile,
        subject_contains=_search_text(query.subject, "subject"), san_contains=_search_text(query.san, "san"),
        serial=_serial_hex(query.serial), thumbprint=_thumbprint(query.thumbprint),
        device_id=_device_id(query.device_id), before=None if query.cursor is None else decode_cursor(query.cursor),
        limit=check_limit(query.limit) + 1, **bounds,
    )


def parse_duration(text: str, option: str) -> timedelta:
    """A positive duration as ``<count><unit>``, unit one of s, m, h, d, w (``30m``, ``24h``, ``7d``)."""
    matched = _DURATION.fullmatch(text.strip())
    if matched is None:
        raise ValueError(f"{option} {text!r} is not a duration (like 30m, 24h, 7d or 2w)")
    count, unit = int(matched[1]), matched[2]
    if count == 0:
        raise ValueError(f"{option} {text!r} must be a positive duration")
    try:
        return timedelta(**{_UNITS[unit]: count})
    except OverflowError:
        raise ValueError(f"{option} {text!r} is too long") from None


def parse_time(text: str, option: str, *, now: datetime) -> datetime:
    """A duration back from ``now`` (``7d``: seven days ago) or an ISO 8601 time with its zone."""
    if _DURATION.fullmatch(text.strip()):
        return _shifted(now, -parse_duration(text, option), option)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{option} {text!r} is neither a duration (like 7d, 24h, 30m) nor an ISO 8601 time with a zone "
            "(like 2026-05-01T08:00:00+02:00)"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{option} {text!r} has no time zone: add one (like +02:00 or Z)")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{option} {text!r} is outside the calendar") from None


def parse_range(
    since: str | None, until: str | None, *, now: datetime, names: tuple[str, str] = ("--since", "--until")
) -> tuple[datetime | None, datetime | None]:
    """``[since, until)`` from :func:`parse_time`'s forms; ValueError unless ``since`` comes first."""
    start = parse_time(since, names[0], now=now) if since is not None else None
    end = parse_time(until, names[1], now=now) if until is not None else None
    if start is not None and end is not None and start >= end:
        raise ValueError(f"{names[0]} {since!r} is not before {names[1]} {until!r}")
    return start, end


def parse_outcome(text: str, option: str = "--outcome") -> tuple[str, ...]:
    """The stored outcomes an ``--outcome`` means, ignoring case: ``success``, ``pending``, ``failure`` (every
    failure), or one failure by its failInfo (``bad_request`` or ``FAILURE:BAD_REQUEST``)."""
    wanted = text.strip().upper()
    if wanted == _FAILURE.rstrip(":"):
        return tuple(status.value for status in OperationStatus if status.value.startswith(_FAILURE))
    for status in OperationStatus:
        if wanted in (status.value, status.value.removeprefix(_FAILURE)):
            return (status.value,)
    raise ValueError(f"{option} {text!r} is not an outcome; use one of {', '.join(OUTCOMES)}")


def certificate_row(record: CertificateRecord, now: datetime) -> dict[str, Any]:
    """:func:`~scep_server.service.certificates.describe`'s fields, the device behind the certificate
    (:func:`~scep_server.service.certificates.device_fields`), whether it has expired at ``now``, and the
    revocation reason by its RFC 5280 name."""
    return describe(record) | device_fields(record) | {
        "expired": record.not_after < now,
        "revocation_reason": _reason_name(record.revocation_reason),
    }


def event_row(record: OperationRecord) -> dict[str, Any]:
    """One SCEP event as JSON-ready values; the message type by name (``PKCS_REQ``)."""
    return {
        "occurred_at": record.occurred_at.isoformat(),
        "outcome": record.outcome,
        "profile": record.profile,
        "operation": record.operation,
        "message_type": _message_type_name(record.message_type),
        "transaction_id": record.transaction_id,
        "requester_ip": record.requester_ip,
        "detail": record.detail,
    }


def to_json(rows: Iterable[Mapping[str, Any]]) -> str:
    """A JSON array of the rows; control characters (from a device's names) come out as escapes."""
    return json.dumps(list(rows), indent=2) + "\n"


def to_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A header row and one row each (RFC 4180: CRLF, fields with commas, quotes or line breaks quoted).

    What a device chose may hold control characters: they are written as RFC 4514 hex escapes. A cell that
    a spreadsheet would read as a formula (one starting with ``=``, ``+``, ``-``, ``@``) gets a leading
    single quote, so opening the export never runs it.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows([_cell(row[column]) for column in columns] for row in rows)
    return buffer.getvalue()


def _cell(value: object) -> str:
    text = printable(_cell_text(value))
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "; ".join(str(item) for item in value)
    return str(value)


def _status_bounds(status: ReportStatus | None, now: datetime) -> dict[str, Any]:
    """The filter a state is: valid and revoked are stored; expired is notAfter before now."""
    if status is ReportStatus.VALID:
        return {"status": CertStatus.VALID, "expires_from": now}
    if status is ReportStatus.REVOKED:
        return {"status": CertStatus.REVOKED}
    if status is ReportStatus.EXPIRED:
        return {"expires_before": now}
    return {}


def _certificate_key(row: KeyedCertificate) -> tuple[datetime, int]:
    return row.record.issued_at, row.row_id


def _report_status(status: ReportStatus | str | None) -> ReportStatus | None:
    if status is None:
        return None
    try:
        return ReportStatus(status)
    except ValueError:
        raise ValueError(f"status {status!r} is not one of {', '.join(REPORT_STATUSES)}") from None


def _aware(moment: datetime | None, name: str) -> datetime | None:
    if moment is not None and moment.utcoffset() is None:
        raise ValueError(f"{name} must be a time with a zone")
    return moment


def _earliest(*moments: datetime | None) -> datetime | None:
    given = [moment for moment in moments if moment is not None]
    return min(given) if given else None


def _search_text(text: str | None, name: str) -> str | None:
    if text is not None and len(text) > MAX_SEARCH_LENGTH:
        raise ValueError(f"{name} is longer than {MAX_SEARCH_LENGTH} characters")
    return text


def _serial_hex(serial: int | str | None) -> str | None:
    """The stored form of a serial given as a number or as text; ValueError naming ``serial``."""
    if serial is None:
        return None
    if isinstance(serial, str):
        try:
            serial = parse_serial(serial)
        except ValueError:
            raise ValueError(f"serial {serial!r} is not a hexadecimal serial number this CA can issue") from None
    if not serial_storable(serial):
        raise ValueError(f"serial {serial!r} is not a serial number this CA can issue")
    return serial_hex(serial)


def _thumbprint(text: str | None) -> str | None:
    if text is None:
        return None
    cleaned = text.strip().replace(":", "").lower()
    if not _THUMBPRINT.fullmatch(cleaned):
        raise ValueError(f"thumbprint {text!r} must be 40 (SHA-1) or 64 (SHA-256) hex digits")
    return cleaned


def _device_id(text: str | None) -> str | None:
    if text is None:
        return None
    cleaned = _search_text(text.strip(), "device_id")
    if not cleaned:
        raise ValueError("device_id must not be empty")
    return cleaned


def _checked_limit(limit: int) -> int:
    if limit < 1:
        raise ValueError(f"the limit must be at least 1, not {limit}")
    return limit


def _page(rows: list[T], limit: int, taken_at: datetime) -> ReportPage[T]:
    return ReportPage(rows[:limit], len(rows) > limit, taken_at)


def _shifted(moment: datetime, delta: timedelta, option: str) -> datetime:
    try:
        return moment + delta
    except OverflowError:
        raise ValueError(f"{option} reaches beyond the calendar") from None


def _reason_name(code: int | None) -> str | None:
    if code is None:
        return None
    try:
        return CRLReason(code).rfc_name
    except ValueError:
        return str(code)


def _message_type_name(value: int | None) -> str | None:
    if value is None:
        return None
    try:
        return MessageType(value).name
    except ValueError:
        return str(value)
