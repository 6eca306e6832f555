"""The audit log: one append-only row per SCEP PKIOperation request, whatever its outcome."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, insert, select

from scep_server.store.base import Repository, check_length, check_page, guard, utcnow
from scep_server.store.records import AuditEvent, OperationRecord
from scep_server.store.tables import IP_LENGTH, LABEL_LENGTH, PROFILE_LENGTH, TRANSACTION_ID_LENGTH, scep_events


class AuditRepository(Repository):
    """Appending to and reading the audit log."""

    def record_operation(
        self,
        *,
        profile: str,
        operation: str,
        message_type: int | None,
        transaction_id: str | None,
        outcome: str,
        detail: str | None,
        requester_ip: str | None,
    ) -> None:
        """Append one SCEP PKIOperation to the audit log. Never pass secrets (challenges) in ``detail``.

        The transactionID may come from a malformed request, so an over-long one is truncated rather
        than refused: the log must record the failure.
        """
        row = event_row(AuditEvent(profile, operation, message_type, transaction_id, outcome, detail, requester_ip))
        with guard(), self._writer.begin() as conn:
            conn.execute(insert(scep_events).values(**row))

    def list_operations(
        self, *, limit: int = 100, offset: int = 0, profile: str | None = None, transaction_id: str | None = None
    ) -> list[OperationRecord]:
        """A page of the audit log, newest first."""
        check_page(limit, offset)
        c = scep_events.c
        query = select(scep_events).order_by(c.occurred_at.desc(), c.id.desc()).limit(limit).offset(offset)
        if profile is not None:
            query = query.where(c.profile == profile)
        if transaction_id is not None:
            query = query.where(c.transaction_id == transaction_id)
        with guard(), self._engine.connect() as conn:
            return [_operation_record(row) for row in conn.execute(query)]


def event_row(event: AuditEvent) -> dict[str, Any]:
    """The ``scep_events`` row of one PKIOperation (see ``AuditRepository.record_operation``)."""
    check_length(event.profile, PROFILE_LENGTH, "profile")
    check_length(event.operation, LABEL_LENGTH, "operation")
    check_length(event.outcome, LABEL_LENGTH, "outcome")
    check_length(event.requester_ip, IP_LENGTH, "requester_ip")
    transaction_id = event.transaction_id
    return {
        "occurred_at": utcnow(),
        "profile": event.profile,
        "operation": event.operation,
        "message_type": event.message_type,
        "transaction_id": None if transaction_id is None else transaction_id[:TRANSACTION_ID_LENGTH],
        "outcome": event.outcome,
        "detail": event.detail,
        "requester_ip": event.requester_ip,
    }


def _operation_record(row: Row[Any]) -> OperationRecord:
    m = row._mapping
    return OperationRecord(
        occurred_at=m["occurred_at"],
        profile=m["profile"],
        operation=m["operation"],
        message_type=m["message_type"],
        transaction_id=m["transaction_id"],
        outcome=m["outcome"],
        detail=m["detail"],
        requester_ip=m["requester_ip"],
    )
