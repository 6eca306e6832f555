"""The operators' view of enrollments: a search of SCEP transactions, and the full story of one.

The story of a transaction merges what the store holds about it into one timeline, oldest first:

- ``received``: the transaction was first claimed (its ``created_at``; outcome: the message type);
- the recorded steps: ``validated`` (outcome ``accepted``, ``refused``, ``unavailable`` or ``error``,
  with Intune's code and the activity id of the call), ``notified`` and ``notification_failed``;
- ``issued`` (outcome: the serial) and, once it is revoked, ``revoked`` (outcome: the reason), of the
  transaction's certificate;
- one step per SCEP message of the transaction as it was answered: ``answered`` (SUCCESS), ``pending``,
  ``failed`` (FAILURE:<failInfo>) or ``error`` (no CertRep), the outcome as the event log has it.

Steps at the same moment keep that order. Every value is JSON-ready; invalid search values are
``ValueError`` naming the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scep_server.errors import FailInfo
from scep_server.pki.reasons import CRLReason
from scep_server.scep.types import MessageType
from scep_server.service.certificates import describe
from scep_server.service.paging import DEFAULT_LIMIT, CursorPage, check_limit, decode_cursor, page_of
from scep_server.store import (
    CertificateRecord,
    EnrollmentStep,
    OperationRecord,
    OutboxRecord,
    StepRecord,
    Store,
    TransactionSearch,
    TransactionState,
    TransactionSummary,
)

__all__ = ["FAIL_INFO_NAMES", "OUTCOMES", "EnrollmentQueries", "EnrollmentSearch", "transaction_item"]

# The failInfo names of RFC 8894 §3.2.1.4.5, as the search takes and the items give them.
FAIL_INFO_NAMES: dict[str, FailInfo] = {
    "badAlg": FailInfo.BAD_ALG,
    "badMessageCheck": FailInfo.BAD_MESSAGE_CHECK,
    "badRequest": FailInfo.BAD_REQUEST,
    "badTime": FailInfo.BAD_TIME,
    "badCertId": FailInfo.BAD_CERT_ID,
}
_FAIL_INFO_OF = {value: name for name, value in FAIL_INFO_NAMES.items()}
OUTCOMES = (TransactionState.ISSUED.value, TransactionState.PENDING.value, TransactionState.FAILED.value)
STORY_EVENTS = 1000  # a story shows the latest this many SCEP messages of its transaction
# How long a searched value may be: the store's columns.
_MAX_LENGTHS = {"profile": 64, "transaction_id": 255, "requester_ip": 64, "intune_code": 64}

RECEIVED = "received"
ISSUED = "issued"
REVOKED = "revoked"
# The step an answered SCEP message is, by the first part of its outcome in the event log.
_ANSWER_STEPS = {"SUCCESS": "answered", "PENDING": "pending", "FAILURE": "failed"}
# Steps at the same moment: cause before effect.
_RANK = {
    RECEIVED: 0,
    EnrollmentStep.VALIDATED.value: 1,
    ISSUED: 2,
    EnrollmentStep.NOTIFIED.value: 3,
    EnrollmentStep.NOTIFICATION_FAILED.value: 3,
    REVOKED: 4,
}
_ANSWER_RANK = 5


@dataclass(frozen=True, slots=True)
class EnrollmentSearch:
    """Which enrollments: every given condition must hold; newest first, ``limit`` a page.

    ``since`` is included and ``until`` excluded (on when the transaction was received); ``outcome`` is the
    transaction's state (issued, pending, failed); ``fail_info`` a failInfo name (badRequest, ...);
    ``intune_code`` a code Intune answered validateRequest with (ChallengeExpired, ...); ``cursor`` the
    ``next_cursor`` of the previous page.
    """

    since: datetime | None = None
    until: datetime | None = None
    profile: str | None = None
    outcome: str | None = None
    fail_info: str | None = None
    intune_code: str | None = None
    requester_ip: str | None = None
    transaction_id: str | None = None
    cursor: str | None = None
    limit: int = DEFAULT_LIMIT


class EnrollmentQueries:
    """Search the enrollments and tell the story of one; read-only."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def search(self, search: EnrollmentSearch) -> CursorPage[dict[str, Any]]:
        """One page of the enrollments ``search`` describes, newest first."""
        limit = check_limit(search.limit)
        wanted = _store_search(search, limit + 1)
        page = page_of(self._store.search_transactions(wanted), limit, _keyset)
        return CursorPage([transaction_item(found) for found in page.items], page.next_cursor)

    def story(self, transaction_id: str, profile: str | None = None) -> dict[str, Any] | None:
        """Everything known of the transaction (of ``profile``; else the newest of that id), or None."""
        _check_text(transaction_id, "transaction_id")
        _check_text(profile, "profile")
        found = self._store.search_transactions(
            TransactionSearch(transaction_id=transaction_id, profile=profile, limit=1)
        )
        if not found:
            return None
        transaction = found[0].transaction
        certificate = self._store.certificate_of_transaction(
            transaction.profile, transaction.transaction_id, transaction.serial
        )
        events = self._store.list_operations(
            limit=STORY_EVENTS, profile=transaction.profile, transaction_id=transaction.transaction_id
        )
        steps = self._store.steps_of(transaction.transaction_id, transaction.profile)
        notifications = [
            entry for entry in self._store.outbox_of(transaction.transaction_id)
            if entry.payload.get("profile", transaction.profile) == transaction.profile
        ]
        return {
            "transaction": transaction_item(found[0]),
            "steps": _timeline(found[0], steps, certificate, list(reversed(events))),
            "certificate": None if certificate is None else describe(certificate),
            "notifications": [notification_item(entry) for entry in notifications],
        }


def transaction_item(found: TransactionSummary) -> dict[str, Any]:
    """A found transaction as JSON-ready values (the search's item, the story's ``transaction``)."""
    transaction = found.transaction
    return {
        "profile": transaction.profile,
        "transaction_id": transaction.transaction_id,
        "state": transaction.state.value,
        "message_type": _message_type(transaction.message_type),
        "requester_ip": transaction.requester_ip,
        "created_at": transaction.created_at.isoformat(),
        "updated_at": transaction.updated_at.isoformat(),
        "fail_info": None if transaction.fail_info is None else _fail_info_name(transaction.fail_info),
        "fail_reason": transaction.fail_reason,
        "intune_code": found.intune_code,
        "serial": None if transaction.serial is None else f"{transaction.serial:x}",
        "deferred": transaction.deferred,
    }


def notification_item(entry: OutboxRecord) -> dict[str, Any]:
    """An outbox entry of the transaction as JSON-ready values (what it reports, not the CSR it carries)."""
    return {
        "id": entry.id,
        "kind": entry.kind,
        "transaction_id": entry.transaction_id,
        "state": entry.state.value,
        "attempts": entry.attempts,
        "created_at": entry.created_at.isoformat(),
        "next_attempt_at": entry.next_attempt_at.isoformat(),
        "delivered_at": _iso(entry.delivered_at),
        "dead_at": _iso(entry.dead_at),
        "last_error": entry.last_error,
        "hresult": entry.payload.get("hResult"),
        "description": entry.payload.get("errorDescription"),
    }


def _store_search(search: EnrollmentSearch, limit: int) -> TransactionSearch:
    for name in _MAX_LENGTHS:
        _check_text(getattr(search, name), name)
    return TransactionSearch(
        since=_aware(search.since, "since"),
        until=_aware(search.until, "until"),
        profile=search.profile,
        state=None if search.outcome is None else _state(search.outcome),
        fail_info=None if search.fail_info is None else int(_fail_info(search.fail_info)),
        intune_code=search.intune_code,
        requester_ip=search.requester_ip,
        transaction_id=search.transaction_id,
        before=None if search.cursor is None else decode_cursor(search.cursor),
        limit=limit,
    )


def _keyset(found: TransactionSummary) -> tuple[datetime, int]:
    return found.transaction.created_at, found.row_id


def _state(outcome: str) -> TransactionState:
    try:
        return TransactionState(outcome)
    except ValueError:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}") from None


def _fail_info(name: str) -> FailInfo:
    try:
        return FAIL_INFO_NAMES[name]
    except KeyError:
        raise ValueError(f"fail_info must be one of {', '.join(FAIL_INFO_NAMES)}, not {name!r}") from None


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value


def _check_text(value: str | None, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty text")
    if len(value) > _MAX_LENGTHS[name]:
        raise ValueError(f"{name} is longer than {_MAX_LENGTHS[name]} characters")


def _timeline(
    found: TransactionSummary, steps: list[StepRecord], certificate: CertificateRecord | None,
    events: list[OperationRecord],
) -> list[dict[str, Any]]:
    transaction = found.transaction
    timeline = [_step(transaction.created_at, RECEIVED, _message_type(transaction.message_type))]
    timeline += [
        _step(s.occurred_at, s.step, s.outcome, s.detail, intune_code=s.intune_code, activity_id=s.activity_id)
        for s in steps
    ]
    if certificate is not None:
        timeline.append(_step(certificate.issued_at, ISSUED, f"{certificate.serial:x}", certificate.subject))
        if certificate.revoked_at is not None:
            timeline.append(_step(certificate.revoked_at, REVOKED, _reason_name(certificate.revocation_reason)))
    timeline += [_answer_step(event) for event in events]
    ordered = sorted(enumerate(timeline), key=lambda item: (item[1]["at"], _rank(item[1]["step"]), item[0]))
    return [{**step, "at": step["at"].isoformat()} for _, step in ordered]


def _step(
    at: datetime, step: str, outcome: str, detail: str | None = None, *, intune_code: str | None = None,
    activity_id: str | None = None,
) -> dict[str, Any]:
    return {"at": at, "step": step, "outcome": outcome, "detail": detail, "intune_code": intune_code,
            "activity_id": activity_id}


def _answer_step(event: OperationRecord) -> dict[str, Any]:
    step = _ANSWER_STEPS.get(event.outcome.split(":", 1)[0], "error")
    message_type = "unknown" if event.message_type is None else _message_type(event.message_type)
    detail = message_type if event.detail is None else f"{message_type}: {event.detail}"
    return _step(event.occurred_at, step, event.outcome, detail)


def _rank(step: str) -> int:
    return _RANK.get(step, _ANSWER_RANK)


def _message_type(value: int) -> str:
    try:
        return MessageType(value).name
    except ValueError:
        return str(value)


def _fail_info_name(value: int) -> str:
    try:
        return _FAIL_INFO_OF[FailInfo(value)]
    except ValueError:
        return str(value)


def _reason_name(code: int | None) -> str:
    try:
        return CRLReason(code if code is not None else 0).rfc_name
    except ValueError:
        return str(code)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
