"""Listings of the hash-chained audit log: every change, and the revocations among them.

A revocation's row says what the certificate table no longer can once it is revoked again elsewhere or
restored: who revoked it (``actor``), through what (``source``), why (the reason and an operator's
comment) and when. The row's subject is ``serial=<hex> issuer=<name>`` and its detail a JSON object
(see ``store/audit_chain.certificate_entry``). Both listings are newest first, by the chain's order, and
page by cursor (``paging.py``): its time is the row's ``occurred_at``, its id the row's place in the chain.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scep_server.service.paging import CursorPage, check_limit, decode_cursor, page_of
from scep_server.store import AuditAction, AuditRecord, Store
from scep_server.store.audit_chain import AuditFilter

__all__ = ["REVOCATION_ACTIONS", "AuditQuery", "RevocationQuery", "audit_item", "audit_page", "revocation_item",
           "revocation_page"]

REVOCATION_ACTIONS = (AuditAction.CERTIFICATE_REVOKE.value, AuditAction.CERTIFICATE_WITHDRAW.value)
MAX_NAME_LENGTH = 1024  # of an actor, source or action searched for
_CERTIFICATE_SUBJECT = re.compile(r"serial=([0-9a-f]+) issuer=(.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class RevocationQuery:
    """Revocations recorded in ``[since, until)``, by the ``actor`` named exactly (``token:ops``,
    ``cli:root``, ``intune:<request context>``) through ``source`` (``api``, ``cli``, ``intune-sync``, ...)."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    source: str | None = None
    cursor: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Audit rows of ``action`` (``certificate.revoke``, ``token.create``, ...) by ``actor`` through
    ``source``, recorded in ``[since, until)``."""

    action: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None
    limit: int = 100
    source: str | None = None


def revocation_page(store: Store, query: RevocationQuery) -> CursorPage[dict[str, Any]]:
    """A page of revocations and withdrawals as :func:`revocation_item` rows."""
    wanted = _audit_filter(REVOCATION_ACTIONS, query.actor, query.source, query.since, query.until, query.cursor,
                           query.limit)
    page = page_of(store.audit_chain.search_audit(wanted), query.limit, _record_key)
    return CursorPage([revocation_item(record) for record in page.items], page.next_cursor)


def audit_page(store: Store, query: AuditQuery) -> CursorPage[dict[str, Any]]:
    """A page of audit rows as :func:`audit_item` rows."""
    actions = () if query.action is None else (_name(query.action, "action"),)
    wanted = _audit_filter(actions, query.actor, query.source, query.since, query.until, query.cursor, query.limit)
    page = page_of(store.audit_chain.search_audit(wanted), query.limit, _record_key)
    return CursorPage([audit_item(record) for record in page.items], page.next_cursor)


def audit_item(record: AuditRecord) -> dict[str, Any]:
    """One audit row as JSON-ready values; ``detail`` as the object it holds."""
    return {
        "id": record.id,
        "occurred_at": record.occurred_at.isoformat(),
        "actor": record.actor,
        "source": record.source,
        "action": record.action,
        "subject": record.subject,
        "detail": _detail(record.detail),
    }


def revocation_item(record: AuditRecord) -> dict[str, Any]:
    """One revocation (or withdrawal) row: the certificate, the reason by its RFC 5280 name, who and
    through what, when it was recorded, the operator's comment if any. A subject that is not a
    certificate's (an edited row) leaves serial and issuer None."""
    detail = _detail(record.detail)
    matched = _CERTIFICATE_SUBJECT.fullmatch(record.subject)
    return {
        "serial": matched[1] if matched else None,
        "issuer": matched[2] if matched else None,
        "reason": _text_or_none(detail.get("reason")),
        "actor": record.actor,
        "source": record.source,
        "action": record.action,
        "revoked_at": record.occurred_at.isoformat(),
        "comment": _text_or_none(detail.get("comment")),
        "audit_id": record.id,
    }


def _audit_filter(
    actions: tuple[str, ...], actor: str | None, source: str | None, since: datetime | None,
    until: datetime | None, cursor: str | None, limit: int,
) -> AuditFilter:
    """The store filter of one page (one row more than ``limit``); ``ValueError`` naming a bad parameter."""
    for moment, name in ((since, "since"), (until, "until")):
        if moment is not None and moment.utcoffset() is None:
            raise ValueError(f"{name} must be a time with a zone")
    if since is not None and until is not None and since >= until:
        raise ValueError(f"since {since.isoformat()} is not before until {until.isoformat()}")
    return AuditFilter(
        actions=actions,
        actor=None if actor is None else _name(actor, "actor"),
        source=None if source is None else _name(source, "source"),
        since=since, until=until,
        before_id=None if cursor is None else decode_cursor(cursor)[1],
        limit=check_limit(limit) + 1,
    )


def _name(value: str, name: str) -> str:
    if not value or len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{name} must be from 1 to {MAX_NAME_LENGTH} characters")
    return value


def _record_key(record: AuditRecord) -> tuple[datetime, int]:
    return record.occurred_at, record.id


def _detail(text: str) -> dict[str, Any]:
    """The detail object; a row edited into something else shows as its text, for ``audit verify`` to judge."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text}
    return value if isinstance(value, dict) else {"unreadable": text}


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)
