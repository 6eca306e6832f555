"""The steps of an enrollment beyond its SCEP messages, and the queries that tell one enrollment's story.

A step is appended once and never changed: what Intune answered to validateRequest (``validated``, with
its code and the activity id the call ran under) and what became of the success and failure
notifications (``notified``, ``notification_failed``). The rest of the story is read from the tables that
hold it already: the transaction, its SCEP events, its certificate and its outbox rows.

The transaction search pages newest first by (created_at, id): a page is the rows before the last one of
the previous page, read off ``ix_scep_transactions_created_at_id``. A search by Intune code keeps the
transactions that have a ``validated`` step with that code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, and_, exists, insert, or_, select
from sqlalchemy.sql.elements import ColumnElement

from scep_server.store.base import Repository, aware, check_length, check_page, guard, utcnow
from scep_server.store.certificates import certificate_record
from scep_server.store.records import CertificateRecord, OutboxRecord, TransactionRecord, TransactionState
from scep_server.store.serials import serial_hex
from scep_server.store.tables import (
    LABEL_LENGTH,
    PROFILE_LENGTH,
    TRANSACTION_ID_LENGTH,
    certificates,
    enrollment_steps,
    intune_outbox,
    transactions,
)
from scep_server.store.transactions import transaction_record

__all__ = [
    "EnrollmentStep",
    "StepRecord",
    "StepRepository",
    "TransactionSearch",
    "TransactionSummary",
]

_step = enrollment_steps.c
_tx = transactions.c
_cert = certificates.c
_outbox = intune_outbox.c
_OUTBOX_FIELDS = tuple(field.name for field in fields(OutboxRecord))  # the outbox columns a record holds


class EnrollmentStep(StrEnum):
    """The steps that are recorded (the others of a story are read from the tables that hold them)."""

    VALIDATED = "validated"  # Intune answered validateRequest, or could not be asked
    NOTIFIED = "notified"  # Intune acknowledged a success or failure notification
    NOTIFICATION_FAILED = "notification_failed"  # a notification was not acknowledged (yet)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One recorded step of an enrollment; ``occurred_at`` is UTC-aware."""

    id: int
    occurred_at: datetime
    profile: str
    transaction_id: str
    step: str
    outcome: str
    intune_code: str | None
    activity_id: str | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class TransactionSearch:
    """Which transactions: every given condition must hold; newest first.

    ``since`` is included and ``until`` excluded (on created_at); ``before`` is a page's keyset: only the
    rows whose (created_at, id) sort before it. ``intune_code``: Intune answered validateRequest so.
    """

    since: datetime | None = None
    until: datetime | None = None
    profile: str | None = None
    state: TransactionState | None = None
    fail_info: int | None = None
    intune_code: str | None = None
    requester_ip: str | None = None
    transaction_id: str | None = None
    before: tuple[datetime, int] | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class TransactionSummary:
    """A transaction found by a search: its row id (the keyset's tie-breaker), the transaction and the
    code of Intune's latest answer to validateRequest about it (None when Intune never answered)."""

    row_id: int
    transaction: TransactionRecord
    intune_code: str | None


class StepRepository(Repository):
    """Recording steps, and reading what one enrollment's story is made of."""

    def record_step(
        self,
        *,
        profile: str,
        transaction_id: str,
        step: str,
        outcome: str,
        intune_code: str | None = None,
        activity_id: str | None = None,
        detail: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Append one step of the transaction (at ``at``, default now). ``ValueError`` for an empty key,
        step or outcome, or a value longer than its column."""
        _check_step(profile, transaction_id, step, outcome)
        for value, name in ((intune_code, "intune_code"), (activity_id, "activity_id")):
            check_length(value, LABEL_LENGTH, name)
        row = {
            "occurred_at": utcnow() if at is None else aware(at, "at"),
            "profile": profile,
            "transaction_id": transaction_id,
            "step": step,
            "outcome": outcome,
            "intune_code": intune_code,
            "activity_id": activity_id,
            "detail": detail,
        }
        with guard(), self._writer.begin() as conn:
            conn.execute(insert(enrollment_steps).values(**row))

    def steps_of(self, transaction_id: str, profile: str | None = None) -> list[StepRecord]:
        """The transaction's steps, oldest first; of every profile's transaction of that id unless ``profile``."""
        query = (
            select(enrollment_steps)
            .where(_step.transaction_id == transaction_id)
            .order_by(_step.occurred_at, _step.id)
        )
        if profile is not None:
            query = query.where(_step.profile == profile)
        with guard(), self._engine.connect() as conn:
            return [StepRecord(**row._mapping) for row in conn.execute(query)]

    def search_transactions(self, wanted: TransactionSearch) -> list[TransactionSummary]:
        """The transactions ``wanted`` describes, newest first (created_at, then id), ``wanted.limit`` at most."""
        check_page(wanted.limit)
        query = (
            select(transactions, _latest_intune_code().label("latest_intune_code"))
            .where(*_search_conditions(wanted))
            .order_by(_tx.created_at.desc(), _tx.id.desc())
            .limit(wanted.limit)
        )
        with guard(), self._engine.connect() as conn:
            return [_summary(row) for row in conn.execute(query)]

    def certificate_of_transaction(
        self, profile: str, transaction_id: str, serial: int | None = None
    ) -> CertificateRecord | None:
        """The certificate stored for the transaction: the one with ``serial`` if given, else the newest."""
        query = (
            select(certificates)
            .where(_cert.profile == profile, _cert.transaction_id == transaction_id)
            .order_by(_cert.issued_at.desc(), _cert.id.desc())
            .limit(1)
        )
        if serial is not None:
            query = query.where(_cert.serial_hex == serial_hex(serial))
        with guard(), self._engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else certificate_record(row)

    def outbox_of(self, transaction_id: str) -> list[OutboxRecord]:
        """The Intune outbox entries of the transaction id, in whatever state, oldest first."""
        query = select(intune_outbox).where(_outbox.transaction_id == transaction_id).order_by(
            _outbox.created_at, _outbox.id
        )
        with guard(), self._engine.connect() as conn:
            return [_outbox_entry(row) for row in conn.execute(query)]


def _check_step(profile: str, transaction_id: str, step: str, outcome: str) -> None:
    for value, name, limit in (
        (profile, "profile", PROFILE_LENGTH),
        (transaction_id, "transaction_id", TRANSACTION_ID_LENGTH),
        (step, "step", LABEL_LENGTH),
        (outcome, "outcome", LABEL_LENGTH),
    ):
        if not value:
            raise ValueError(f"{name} must not be empty")
        check_length(value, limit, name)


def _same_transaction() -> ColumnElement[bool]:
    return and_(_step.profile == _tx.profile, _step.transaction_id == _tx.transaction_id)


def _validated_with_code() -> ColumnElement[bool]:
    return and_(_same_transaction(), _step.step == EnrollmentStep.VALIDATED.value, _step.intune_code.is_not(None))


def _latest_intune_code() -> Any:
    """The code of Intune's latest validateRequest answer about the outer query's transaction."""
    return (
        select(_step.intune_code)
        .where(_validated_with_code())
        .order_by(_step.occurred_at.desc(), _step.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _search_conditions(wanted: TransactionSearch) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if wanted.since is not None:
        conditions.append(_tx.created_at >= aware(wanted.since, "since"))
    if wanted.until is not None:
        conditions.append(_tx.created_at < aware(wanted.until, "until"))
    if wanted.before is not None:
        conditions.append(_before(*wanted.before))
    equal: tuple[tuple[ColumnElement[Any], object], ...] = (
        (_tx.profile, wanted.profile),
        (_tx.state, None if wanted.state is None else TransactionState(wanted.state).value),
        (_tx.fail_info, wanted.fail_info),
        (_tx.requester_ip, wanted.requester_ip),
        (_tx.transaction_id, wanted.transaction_id),
    )
    conditions.extend(column == value for column, value in equal if value is not None)
    if wanted.intune_code is not None:
        conditions.append(exists().where(_validated_with_code(), _step.intune_code == wanted.intune_code))
    return conditions


def _before(moment: datetime, row_id: int) -> ColumnElement[bool]:
    """(created_at, id) < (moment, row_id); the first bound alone lets either database range-scan the index."""
    moment = aware(moment, "cursor")
    return and_(_tx.created_at <= moment, or_(_tx.created_at < moment, _tx.id < row_id))


def _summary(row: Row[Any]) -> TransactionSummary:
    return TransactionSummary(row._mapping["id"], transaction_record(row), row._mapping["latest_intune_code"])


def _outbox_entry(row: Row[Any]) -> OutboxRecord:
    values = {name: row._mapping[name] for name in _OUTBOX_FIELDS}
    return OutboxRecord(**{**values, "payload": json.loads(values["payload"])})
