"""What the admin API and the console share about one-time challenge passwords: the use cases for the
current request, a page of the listing and a password as a row (never its secret: the store has none).

A request's use cases run on a clock stopped at the request's time, so that the expiry an answer names
is the one stored and every state in a listing is as of one moment. The listing is paged by the cursor
of :mod:`scep_server.service.paging`; only its row id counts, as the passwords are listed by id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scep_server.service.otp import OtpService, otp_profiles
from scep_server.service.paging import CursorPage, decode_cursor, encode_cursor
from scep_server.web.context import runtime

__all__ = ["otp_page", "otp_row", "otp_service"]


def otp_service(now: datetime) -> OtpService:
    """The one-time password use cases of the app's runtime, for its otp profiles, as of ``now``."""
    current = runtime()
    return OtpService(current.store, profiles=otp_profiles(current.config), clock=lambda: now)


def otp_page(
    service: OtpService, *, profile: str | None, cursor: str | None, limit: int
) -> CursorPage[dict[str, Any]]:
    """``limit`` passwords as rows, newest first, from ``cursor`` on; ``ValueError`` for a cursor not made here."""
    before_id = None if cursor is None else decode_cursor(cursor)[1]
    records = service.list(profile=profile, before_id=before_id, limit=limit)
    rows = [otp_row(service, record) for record in records]
    if len(records) < limit or not service.list(profile=profile, before_id=records[-1].id, limit=1):
        return CursorPage(rows, None)
    return CursorPage(rows, encode_cursor(records[-1].created_at, records[-1].id))


def otp_row(service: OtpService, record: Any) -> dict[str, Any]:
    """A password (an ``OtpRecord`` of ``service``'s) as the API answers it and the console shows it: its
    fields and its state now."""
    return {
        "id": record.id, "profile": record.profile, "subject_pattern": record.subject_pattern,
        "created_at": record.created_at.isoformat(), "expires_at": record.expires_at.isoformat(),
        "created_by": record.created_by, "state": str(service.state(record)),
        "used_at": None if record.used_at is None else record.used_at.isoformat(),
        "used_by_transaction": record.used_by_transaction,
    }
