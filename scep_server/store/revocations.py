"""Revoking certificates and listing the revoked ones for CRLs and OCSP, with each issuer's CRLNumber.

An operator's revocation may carry a comment (why, the ticket it belongs to): it goes into the audit
row's detail, at most ``MAX_COMMENT_LENGTH`` characters and without control characters, so a listing or
a log line that shows it shows exactly that.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Select, insert, select, type_coerce, update
from sqlalchemy.exc import IntegrityError

from scep_server.errors import StoreError, StoreUnavailable
from scep_server.pki.names import describe_character, unprintable_character
from scep_server.pki.reasons import CRLReason
from scep_server.store.audit_chain import SERVICE, Actor, AuditAction, AuditEntry, append, certificate_entry
from scep_server.store.base import RACE_ATTEMPTS, Repository, aware, guard, utcnow
from scep_server.store.certificates import VALID_CERT, certificate_key, certificate_record
from scep_server.store.records import AlreadyRevoked, CertificateNotFound, CertificateRecord, CertStatus
from scep_server.store.tables import certificates, crl_state

REVOCATION_REASONS = frozenset(int(reason) for reason in CRLReason)
# A stored certificate that was never delivered, revoked when its transaction is reclaimed or abandoned.
UNDELIVERED_REASON = int(CRLReason.CESSATION_OF_OPERATION)
MAX_COMMENT_LENGTH = 500

RevokedEntry = tuple[int, datetime, int | None]


class RevocationRepository(Repository):
    """Revocations and the CRL numbers."""

    def revoke(
        self, serial: int, issuer: str, *, reason: int, revoked_at: datetime, actor: Actor = SERVICE,
        comment: str | None = None,
    ) -> CertificateRecord:
        """Revoke a VALID certificate (``reason`` is an RFC 5280 §5.3.1 CRLReason code), audited as
        ``actor``'s in the same transaction, with ``comment`` (see :func:`check_comment`) if given."""
        changes = revocation(reason, revoked_at)
        noted = {} if comment is None else {"comment": check_comment(comment)}
        key = certificate_key(serial, issuer)
        with guard(), self._writer.begin() as conn:
            revoked = conn.execute(update(certificates).where(key & VALID_CERT).values(**changes)).rowcount
            row = conn.execute(select(certificates).where(key)).one_or_none()
            if revoked:
                append(conn, revocation_entry(actor, AuditAction.CERTIFICATE_REVOKE, serial, issuer, reason, **noted))
        if row is None:
            raise CertificateNotFound(serial, issuer)
        record = certificate_record(row)
        if not revoked:
            raise AlreadyRevoked(record)
        return record

    def iter_revoked(self, issuer: str, *, batch_size: int = 1000) -> Iterator[RevokedEntry]:
        """(serial, revoked_at, reason) of every revoked certificate of ``issuer``, in serial_hex order.

        One query, its rows fetched ``batch_size`` at a time as they are consumed (a server-side cursor
        on PostgreSQL; on SQLite in WAL mode the open read blocks no writer), so a million rows are
        never in memory at once. Revocations made while it runs may or may not be seen.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        return self._iter_revoked(issuer, batch_size)

    def next_crl_number(self, issuer: str) -> int:
        """Allocate the next CRLNumber (RFC 5280 §5.2.3) of ``issuer``: 1, 2, 3, ..."""
        with guard():
            for _ in range(RACE_ATTEMPTS):
                try:
                    with self._writer.begin() as conn:
                        return _bump_crl_number(conn, issuer)
                except IntegrityError:
                    continue  # another caller created the counter row first; bump it instead
        raise StoreUnavailable(f"CRL number allocation for {issuer} kept colliding; retry later")

    def _iter_revoked(self, issuer: str, batch_size: int) -> Iterator[RevokedEntry]:
        query = _revoked_query(issuer).execution_options(yield_per=batch_size)
        # Leaving early closes the cursor too (a server-side one on PostgreSQL) and gives the connection back.
        with guard(), self._engine.connect() as conn, conn.execute(query) as rows:
            for hex_serial, when, reason in rows:
                yield int(hex_serial, 16), _utc(when, hex_serial), reason


def revocation(reason: int, revoked_at: datetime) -> dict[str, Any]:
    """The changes that revoke a certificate; ``ValueError`` unless ``reason`` is a CRLReason code."""
    if reason not in REVOCATION_REASONS:
        raise ValueError(f"{reason} is not an RFC 5280 CRLReason code")
    return {"status": CertStatus.REVOKED.value, "revoked_at": aware(revoked_at, "revoked_at"),
            "revocation_reason": reason}


def check_comment(comment: str) -> str:
    """``comment`` if it can go into a revocation's audit row; ``ValueError`` naming ``comment`` otherwise."""
    if not isinstance(comment, str):
        raise ValueError("comment must be text")
    if len(comment) > MAX_COMMENT_LENGTH:
        raise ValueError(f"comment is longer than {MAX_COMMENT_LENGTH} characters")
    char = unprintable_character(comment)
    if char is not None:
        raise ValueError(f"comment contains the control character {describe_character(char)}")
    return comment


def revocation_entry(
    actor: Actor, action: AuditAction, serial: int, issuer: str, reason: int, **detail: str | None
) -> AuditEntry:
    """The audit entry of revoking (or withdrawing) a certificate with ``reason``."""
    return certificate_entry(actor, action, serial, issuer, reason=CRLReason(reason).rfc_name, **detail)


def _revoked_query(issuer: str) -> Select[str, datetime | None, int | None]:
    c = certificates.c
    # A plain DateTime, made UTC-aware by _utc as UTCDateTime would: its per-value hooks (and
    # datetime.replace) would cost more than the rest of the read for a million rows.
    revoked_at = type_coerce(c.revoked_at, DateTime(timezone=True))
    return (
        select(c.serial_hex, revoked_at, c.revocation_reason)
        .where(c.issuer == issuer, c.status == CertStatus.REVOKED.value)
        .order_by(c.serial_hex)
    )


def _utc(when: datetime | None, hex_serial: str) -> datetime:
    """A revocation time read back in UTC: naive values (SQLite) are UTC already."""
    if when is None:
        raise StoreError(f"certificate {hex_serial} is revoked but has no revocation time")
    if when.tzinfo is None:
        return datetime.combine(when, when.time(), UTC)  # several times faster than when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def _bump_crl_number(conn: Connection, issuer: str) -> int:
    now = utcnow()
    mine = crl_state.c.issuer == issuer
    bumped = conn.execute(
        update(crl_state).where(mine).values(crl_number=crl_state.c.crl_number + 1, updated_at=now)
    ).rowcount
    if not bumped:
        conn.execute(insert(crl_state).values(issuer=issuer, crl_number=1, updated_at=now))
        return 1
    return int(conn.execute(select(crl_state.c.crl_number).where(mine)).scalar_one())
