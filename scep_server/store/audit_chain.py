"""The audit log of state changes, hash-chained so that a changed or deleted row shows.

Every issuance, revocation and withdrawal appends one row naming who made the change (``actor``) and
through what (``source``). A row's ``hash`` is SHA-256 over a canonical JSON of its other columns and
``prev_hash``, the hash of the row before it (64 zeros before the first row), so editing a row breaks
its own hash and deleting one breaks the link of the row after it. Rows deleted from the end break
nothing in the rows left: ``audit_head`` keeps the last row's id and hash, written with each append,
and ``verify_audit`` compares it with where the rows end.

A row is appended inside the database transaction of the change it records, as its last statement:
a change is never stored without its row, and a change rolled back takes its row with it (an append
that fails fails the change, as any other failed statement of it would). Appends are serialised: on
SQLite by the write transaction's database lock (``BEGIN IMMEDIATE``, see ``engine.py``), on
PostgreSQL by a transaction-level advisory lock, held from the append to the commit; as the append
comes last, its holder waits for no other lock. A row's id is its place in the chain, the head's
``last_id`` + 1, so the ids have no gaps.

The chain carries no key: it shows edits made without recomputing the hashes that follow. Someone
who can write the database and recomputes them all is caught only by a copy of the head kept
elsewhere (``verify_audit`` reports it; ``scep-server audit verify`` prints it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from scep_server.errors import StoreError
from scep_server.store.base import Repository, aware, check_length, check_page, guard, utcnow
from scep_server.store.records import NewCertificate
from scep_server.store.serials import serial_hex
from scep_server.store.tables import LABEL_LENGTH, audit_head, audit_log

GENESIS_HASH = "0" * 64  # the prev_hash of the first row
PG_AUDIT_LOCK = 0x5CE9A0D1  # pg_advisory_xact_lock key serialising appends to the chain
HEAD_ID = 1
MAX_DETAIL_LENGTH = 4000
_VERIFY_BATCH = 1000
# The columns a row's hash covers, besides itself.
HASHED_COLUMNS = ("id", "occurred_at", "actor", "source", "action", "subject", "detail", "prev_hash")


class AuditAction(StrEnum):
    """The changes the store records by itself."""

    CERTIFICATE_ISSUE = "certificate.issue"
    CERTIFICATE_REVOKE = "certificate.revoke"
    CERTIFICATE_WITHDRAW = "certificate.withdraw"  # revoked because it must not, or was not, delivered
    TOKEN_CREATE = "token.create"
    TOKEN_REVOKE = "token.revoke"
    CA_ROTATE_RA = "ca.rotate-ra"  # by `ca rotate-ra` or the ra-renewal job
    CA_ROLLOVER_STAGE = "ca.rollover.stage"
    CA_ROLLOVER_ACTIVATE = "ca.rollover.activate"
    OUTBOX_RETRY = "outbox.retry"  # an operator made an outbox entry due again


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change (``name``: ``server``, ``admin-token``, ``cli:<user>``, ``intune:<request
    context>``) and through what (``source``: ``scep``, ``api``, ``cli``, ``intune-sync``, ``jobs``)."""

    name: str
    source: str


SCEP = Actor("server", "scep")  # the SCEP issuance flow
SERVICE = Actor("server", "service")  # the server, on nobody's request in particular
BACKGROUND = Actor("server", "jobs")  # the background worker


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change to append; ``detail`` is a small JSON object (never a secret)."""

    actor: Actor
    action: str
    subject: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored row; ``detail`` is the JSON text as stored."""

    id: int
    occurred_at: datetime
    actor: str
    source: str
    action: str
    subject: str
    detail: str
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place the chain does not hold: at ``row_id``, or (None) at its head."""

    row_id: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify_audit`` found: the rows that hold, the hash of the last of them, the first break if any."""

    rows: int
    head_hash: str
    problem: ChainBreak | None

    @property
    def intact(self) -> bool:
        return self.problem is None


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which rows: every given bound must hold; ``actions`` any of these (all when empty). Newest first
    (by id, the chain's order); ``before_id`` keeps the rows before that one, to page on."""

    actions: tuple[str, ...] = ()
    actor: str | None = None
    source: str | None = None
    since: datetime | None = None  # occurred_at >= since
    until: datetime | None = None  # occurred_at < until
    before_id: int | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class _Head:
    last_id: int
    last_hash: str
    stored: bool


class AuditChain(Repository):
    """Appending to, verifying and reading the chained audit log."""

    def append_audit(self, entry: AuditEntry) -> int:
        """Append ``entry`` in a transaction of its own (for a change made outside the store); its row id."""
        with guard(), self._writer.begin() as conn:
            return append(conn, entry)

    def verify_audit(self) -> VerifyReport:
        """Walk the rows in id order, recomputing each hash and link, then compare the head.

        Reads one snapshot (REPEATABLE READ on PostgreSQL, a WAL read transaction on SQLite), so appends
        made meanwhile are not taken for a broken chain.
        """
        with guard(), self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                head = conn.execute(select(audit_head).where(audit_head.c.id == HEAD_ID)).one_or_none()
                query = select(audit_log).order_by(audit_log.c.id).execution_options(yield_per=_VERIFY_BATCH)
                with conn.execute(query) as rows:  # leaving early closes PostgreSQL's server-side cursor
                    return _walk(rows, head)

    def list_audit(self, *, limit: int = 100, offset: int = 0) -> list[AuditRecord]:
        """A page of rows, newest first."""
        check_page(limit, offset)
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit).offset(offset)
        with guard(), self._engine.connect() as conn:
            try:
                return [_record(row) for row in conn.execute(query)]
            except (ValueError, TypeError) as exc:  # a value edited into something unreadable
                raise StoreError(f"an audit row cannot be read ({exc}); run audit verify") from None

    def search_audit(self, wanted: AuditFilter) -> list[AuditRecord]:
        """The rows ``wanted`` selects, newest first."""
        check_page(wanted.limit)
        query = select(audit_log).where(*_audit_conditions(wanted)).order_by(audit_log.c.id.desc())
        with guard(), self._engine.connect() as conn:
            try:
                return [_record(row) for row in conn.execute(query.limit(wanted.limit))]
            except (ValueError, TypeError) as exc:  # a value edited into something unreadable
                raise StoreError(f"an audit row cannot be read ({exc}); run audit verify") from None


def _audit_conditions(wanted: AuditFilter) -> list[ColumnElement[bool]]:
    c = audit_log.c
    conditions: list[ColumnElement[bool]] = []
    if wanted.actions:
        conditions.append(c.action.in_(wanted.actions))
    if wanted.actor is not None:
        conditions.append(c.actor == wanted.actor)
    if wanted.source is not None:
        conditions.append(c.source == wanted.source)
    if wanted.since is not None:
        conditions.append(c.occurred_at >= aware(wanted.since, "since"))
    if wanted.until is not None:
        conditions.append(c.occurred_at < aware(wanted.until, "until"))
    if wanted.before_id is not None:
        conditions.append(c.id < wanted.before_id)
    return conditions


def append(conn: Connection, entry: AuditEntry) -> int:
    """Append ``entry`` in ``conn``'s write transaction, as its last statement; the new row's id.

    ``StoreError`` when the head is missing while rows are there: the log was tampered with, and the
    chain is not continued from a guess.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(PG_AUDIT_LOCK)))
    head = _head(conn)
    row = _row(head.last_id + 1, entry, head.last_hash)
    conn.execute(insert(audit_log).values(**row))
    moved = {"last_id": row["id"], "last_hash": row["hash"]}
    if head.stored:
        conn.execute(update(audit_head).where(audit_head.c.id == HEAD_ID).values(**moved))
    else:
        conn.execute(insert(audit_head).values(id=HEAD_ID, **moved))
    return int(row["id"])


def certificate_entry(
    actor: Actor, action: AuditAction, serial: int, issuer: str, **detail: str | int | None
) -> AuditEntry:
    """The entry of a change to the certificate ``serial`` of ``issuer``."""
    return AuditEntry(actor, action.value, f"serial={serial_hex(serial)} issuer={issuer}", detail)


def issue_entry(certificate: NewCertificate) -> AuditEntry:
    """The entry of storing a certificate the SCEP issuance flow signed."""
    return certificate_entry(SCEP, AuditAction.CERTIFICATE_ISSUE, certificate.serial, certificate.issuer,
                             profile=certificate.profile, transaction_id=certificate.transaction_id)


def row_hash(row: Mapping[str, Any]) -> str:
    """The hash of a row (its ``HASHED_COLUMNS``), as stored in its ``hash`` column."""
    fields = {name: row[name] for name in HASHED_COLUMNS}
    fields["occurred_at"] = _timestamp(row["occurred_at"])
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _head(conn: Connection) -> _Head:
    stored = conn.execute(select(audit_head).where(audit_head.c.id == HEAD_ID)).one_or_none()
    if stored is not None:
        return _Head(int(stored.last_id), str(stored.last_hash), stored=True)
    if conn.execute(select(audit_log.c.id).limit(1)).first() is not None:
        raise StoreError("the audit log's head row is missing while the log holds rows: it was tampered with; "
                         "run `scep-server audit verify` and restore the database from a backup")
    return _Head(0, GENESIS_HASH, stored=False)


def _row(row_id: int, entry: AuditEntry, prev_hash: str) -> dict[str, Any]:
    for value, name in ((entry.actor.source, "source"), (entry.action, "action")):
        check_length(value, LABEL_LENGTH, name)
    detail = json.dumps(dict(entry.detail), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    check_length(detail, MAX_DETAIL_LENGTH, "detail")
    row: dict[str, Any] = {
        "id": row_id,
        "occurred_at": utcnow(),
        "actor": entry.actor.name,
        "source": entry.actor.source,
        "action": entry.action,
        "subject": entry.subject,
        "detail": detail,
        "prev_hash": prev_hash,
    }
    return row | {"hash": row_hash(row)}


def _walk(rows: Iterable[Row[Any]], head: Row[Any] | None) -> VerifyReport:
    last_id, last_hash, count = 0, GENESIS_HASH, 0
    try:
        for row in rows:
            problem = _check_row(dict(row._mapping), last_id, last_hash)
            if problem is not None:
                return VerifyReport(count, last_hash, problem)
            last_id, last_hash, count = int(row.id), str(row.hash), count + 1
    except (ValueError, TypeError) as exc:  # a value edited into something the driver cannot read
        return VerifyReport(count, last_hash, ChainBreak(None, f"the row after row {last_id} cannot be read ({exc})"))
    return VerifyReport(count, last_hash, _check_head(head, last_id, last_hash))


def _check_row(row: Mapping[str, Any], last_id: int, last_hash: str) -> ChainBreak | None:
    row_id = row["id"]
    if row_hash(row) != row["hash"]:
        return ChainBreak(row_id, "its contents do not match its hash: the row was changed")
    if row_id != last_id + 1:
        return ChainBreak(row_id, f"{_rows(last_id + 1, row_id - 1)} deleted before it")
    if row["prev_hash"] != last_hash:
        return ChainBreak(row_id, f"it does not follow row {last_id}: a row before it was replaced")
    return None


def _check_head(head: Row[Any] | None, last_id: int, last_hash: str) -> ChainBreak | None:
    if head is None:
        return None if last_id == 0 else ChainBreak(None, f"the head is missing (the rows end at row {last_id})")
    if head.last_id > last_id:
        return ChainBreak(last_id + 1, f"the head names row {head.last_id}: {_rows(last_id + 1, head.last_id)} deleted")
    if (head.last_id, head.last_hash) != (last_id, last_hash):
        return ChainBreak(None, f"the head does not match the last row ({last_id}): the head was changed, or rows "
                                "were added past it")
    return None


def _rows(first: int, last: int) -> str:
    return f"row {first} was" if first == last else f"rows {first}-{last} were"


def _record(row: Row[Any]) -> AuditRecord:
    m = row._mapping
    return AuditRecord(
        id=m["id"], occurred_at=m["occurred_at"], actor=m["actor"], source=m["source"], action=m["action"],
        subject=m["subject"], detail=m["detail"], prev_hash=m["prev_hash"], hash=m["hash"],
    )
