"""Intune revocation requests (intune-api.md §6) and the results owed to Intune.

Each request is recorded once by its ``requestContext``, so a request Intune sends again (it does until
our result is acknowledged) is never revoked twice; its result is kept and uploaded until Intune answers
``value: true``. A retryable result (41xx) is replaced when the request is processed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from scep_server.errors import StoreError
from scep_server.store.base import Repository, aware, check_length, check_page, guard, utcnow
from scep_server.store.tables import REQUEST_CONTEXT_LENGTH, intune_revocations

_c = intune_revocations.c
RETRYABLE_FLOOR = 4100  # 41xx codes ask Intune to send the request again


@dataclass(frozen=True, slots=True)
class IntuneRevocationRecord:
    request_context: str
    serial_number: str
    issuer_name: str | None
    ca_configuration: str | None
    received_at: datetime
    result_code: int | None
    result_message: str | None
    processed_at: datetime | None
    uploaded_at: datetime | None

    @property
    def needs_processing(self) -> bool:
        """Never processed, or last time only a retryable result came out."""
        return self.result_code is None or self.result_code >= RETRYABLE_FLOOR


@dataclass(frozen=True, slots=True)
class RevocationSyncSummary:
    """Where the revocation sync stands: the latest request received, processed and uploaded, the
    results not uploaded yet, and how many requests have each result code."""

    last_received_at: datetime | None
    last_processed_at: datetime | None
    last_uploaded_at: datetime | None
    awaiting_upload: int
    results: dict[int, int]


class IntuneRevocationRepository(Repository):
    """The Intune revocation methods of ``Store``."""

    def record_revocation_request(
        self, *, request_context: str, serial_number: str, issuer_name: str | None, ca_configuration: str | None
    ) -> IntuneRevocationRecord:
        """Remember a downloaded request (idempotent by requestContext); returns the stored row."""
        if not request_context:
            raise ValueError("request_context must not be empty")
        check_length(request_context, REQUEST_CONTEXT_LENGTH, "request_context")
        row = {
            "request_context": request_context, "serial_number": serial_number[:128], "issuer_name": issuer_name,
            "ca_configuration": ca_configuration, "received_at": utcnow(),
        }
        try:
            with guard(), self._writer.begin() as conn:
                conn.execute(insert(intune_revocations).values(**row))
        except StoreError as exc:  # a duplicate is the expected case for a re-sent request
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        found = self.get_revocation_request(request_context)
        assert found is not None
        return found

    def get_revocation_request(self, request_context: str) -> IntuneRevocationRecord | None:
        query = select(intune_revocations).where(_c.request_context == request_context)
        with guard(), self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _record(row)

    def set_revocation_result(self, request_context: str, *, code: int, message: str) -> None:
        """Store the outcome (to be uploaded); a new result clears any earlier upload mark."""
        values = {"result_code": code, "result_message": message[:1024], "processed_at": utcnow(),
                  "uploaded_at": None}
        with guard(), self._writer.begin() as conn:
            conn.execute(update(intune_revocations).where(_c.request_context == request_context).values(**values))

    def revocation_results_to_upload(self, *, limit: int = 500) -> list[IntuneRevocationRecord]:
        check_page(limit)
        query = (
            select(intune_revocations)
            .where(_c.uploaded_at.is_(None), _c.result_code.is_not(None))
            .order_by(_c.id)
            .limit(limit)
        )
        with guard(), self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def revocation_sync_summary(self) -> RevocationSyncSummary:
        """The summary over every request recorded."""
        latest = select(
            func.max(_c.received_at), func.max(_c.processed_at), func.max(_c.uploaded_at),
            func.count().filter(_c.uploaded_at.is_(None) & _c.result_code.is_not(None)),
        ).select_from(intune_revocations)
        by_code = (
            select(_c.result_code, func.count()).where(_c.result_code.is_not(None)).group_by(_c.result_code)
        )
        with guard(), self._engine.connect() as conn:
            received, processed, uploaded, awaiting = conn.execute(latest).one()
            results = {int(code): int(count) for code, count in conn.execute(by_code)}
        return RevocationSyncSummary(received, processed, uploaded, int(awaiting), results)

    def mark_revocation_results_uploaded(self, request_contexts: Sequence[str], *, at: datetime) -> None:
        if not request_contexts:
            return
        statement = (
            update(intune_revocations)
            .where(_c.request_context.in_(list(request_contexts)), _c.uploaded_at.is_(None))
            .values(uploaded_at=aware(at, "at"))
        )
        with guard(), self._writer.begin() as conn:
            conn.execute(statement)


def _record(row: Row[object]) -> IntuneRevocationRecord:
    m = row._mapping
    return IntuneRevocationRecord(
        request_context=m["request_context"], serial_number=m["serial_number"], issuer_name=m["issuer_name"],
        ca_configuration=m["ca_configuration"], received_at=m["received_at"], result_code=m["result_code"],
        result_message=m["result_message"], processed_at=m["processed_at"], uploaded_at=m["uploaded_at"],
    )
