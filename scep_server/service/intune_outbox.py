"""The durable outbox of Intune failure notifications.

A failure notification is written to the store first and delivered afterwards, by whichever process's
background worker leases it; it is retried with backoff until Intune acknowledges it (``Success``), so
none is lost across outages or restarts. One that Intune keeps refusing is marked dead after
``MAX_ATTEMPTS`` and logged as an error.

Each attempt is a step of its enrollment too (``Store.record_step``): ``notified`` when Intune
acknowledged it, ``notification_failed`` (outcome ``retrying`` or ``dead``) when not. That needs the
enrollment's profile, which the entry carries from when it was queued; an entry queued without one has
no steps. Steps are best-effort: one that cannot be written is logged and changes nothing else.
"""

from __future__ import annotations

import base64
import logging
import random
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from scep_server.errors import Conflict, IntuneError, StoreError
from scep_server.intune.client import IntuneClient
from scep_server.store import EnrollmentStep, OutboxRecord, Store

log = logging.getLogger("scep_server.service.intune_outbox")

FAILURE_NOTIFICATION = "failureNotification"
PROFILE_KEY = "profile"  # the enrollment's profile, kept beside what is sent to Intune
MAX_ATTEMPTS = 200
LEASE = timedelta(minutes=2)
BACKOFF_FIRST = timedelta(seconds=5)
BACKOFF_MAX = timedelta(minutes=10)


class NotificationOutbox:
    """Queues notifications in the store and delivers them to Intune."""

    def __init__(self, store: Store, client: IntuneClient, *, wake: threading.Event | None = None) -> None:
        self._store = store
        self._client = client
        self._wake = wake

    def enqueue_failure(
        self, *, transaction_id: str, csr_der: bytes, hresult: int, description: str, profile: str | None = None
    ) -> int:
        """Queue a failureNotification; ``profile`` (the enrollment's) lets its delivery be journalled."""
        payload: dict[str, object] = {
            "transactionId": transaction_id,
            "certificateRequest": base64.b64encode(csr_der).decode("ascii"),
            "hResult": hresult,
            "errorDescription": description,
        }
        if profile is not None:
            payload[PROFILE_KEY] = profile
        outbox_id = self._store.outbox_add(kind=FAILURE_NOTIFICATION, transaction_id=transaction_id, payload=payload)
        log.info("failure notification queued id=%d transaction=%s hresult=0x%08x", outbox_id, transaction_id, hresult)
        if self._wake is not None:
            self._wake.set()
        return outbox_id

    def deliver_due(self, now: datetime | None = None, limit: int = 20) -> int:
        """Deliver what is due; returns how many were acknowledged."""
        now = now or datetime.now(UTC)
        delivered = 0
        for record in self._store.outbox_due(now=now, limit=limit):
            if self._store.outbox_lease(record.id, expected_next_attempt_at=record.next_attempt_at,
                                        lease_until=now + LEASE):
                delivered += self._deliver(record, now)
        return delivered

    def _deliver(self, record: OutboxRecord, now: datetime) -> int:
        try:
            result = self._send(record)
        except IntuneError as exc:
            self._retry(record, now, exc.detail, Answer(None, exc.activity_id))
            return 0
        if result.succeeded:
            self._journal(record, EnrollmentStep.NOTIFIED, "acknowledged", Answer(result.code, result.activity_id))
            try:
                self._store.outbox_delivered(record.id, at=datetime.now(UTC))
            except (StoreError, Conflict) as exc:  # e.g. the lease ran out and another worker finished it first
                log.warning("outbox id=%d delivered but not marked: %s", record.id, exc)
                return 0
            log.info("failure notification delivered id=%d transaction=%s", record.id, record.transaction_id)
            return 1
        self._retry(record, now, f"Intune answered {result.code}", Answer(result.code, result.activity_id))
        return 0

    def _send(self, record: OutboxRecord):  # type: ignore[no-untyped-def]
        payload = record.payload
        return self._client.send_failure_notification(
            transaction_id=str(payload["transactionId"]),
            csr_der=base64.b64decode(str(payload["certificateRequest"])),
            hresult=int(payload["hResult"]),
            description=str(payload["errorDescription"]),
        )

    def _retry(self, record: OutboxRecord, now: datetime, error: str, answer: Answer) -> None:
        given_up = record.attempts + 1 >= MAX_ATTEMPTS
        self._journal(record, EnrollmentStep.NOTIFICATION_FAILED, "dead" if given_up else "retrying", answer,
                      f"attempt {record.attempts + 1}: {error}")
        try:
            if given_up:
                self._store.outbox_dead(record.id, at=now, error=error)
                log.error("failure notification id=%d given up after %d attempts: %s", record.id, MAX_ATTEMPTS, error)
                return
            delay = min(BACKOFF_FIRST * (2 ** min(record.attempts, 12)), BACKOFF_MAX)
            delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security
            self._store.outbox_retry(record.id, next_attempt_at=now + delay, error=error)
            log.warning("failure notification id=%d not delivered (attempt %d): %s",
                        record.id, record.attempts + 1, error)
        except (StoreError, Conflict) as exc:  # the lease expires and another attempt follows
            log.error("outbox bookkeeping failed for id=%d: %s", record.id, exc)

    def _journal(
        self, record: OutboxRecord, step: EnrollmentStep, outcome: str, answer: Answer, error: str | None = None
    ) -> None:
        """Record the attempt as a step of the entry's enrollment (best-effort, see the module)."""
        profile = record.payload.get(PROFILE_KEY)
        if not isinstance(profile, str) or record.transaction_id is None:
            return
        detail = f"{record.kind} (hResult 0x{int(record.payload['hResult']) & 0xFFFFFFFF:08x})"
        try:
            self._store.record_step(
                profile=profile, transaction_id=record.transaction_id, step=step.value, outcome=outcome,
                intune_code=answer.code, activity_id=answer.activity_id,
                detail=detail if error is None else f"{detail}, {error}",
            )
        except (StoreError, ValueError) as exc:  # ValueError: a value longer than its column
            log.error("the %s step of outbox id=%d was not recorded: %s", step.value, record.id, exc)


@dataclass(frozen=True, slots=True)
class Answer:
    """What Intune said to one delivery attempt: its code (None when it did not answer) and the call's
    activity id (None when the call never got that far)."""

    code: str | None
    activity_id: str | None
