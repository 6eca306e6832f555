"""One-time challenge passwords (``challenge: {type: otp}``), kept as SHA-256 only.

A password is used by the first enrollment that consumes it: ``consume_otp`` is one conditional
``UPDATE ... WHERE secret_hash = :h AND used_at IS NULL AND expires_at > :now``, and only the statement
that changed the row (rowcount 1) won. On PostgreSQL a concurrent UPDATE of the row waits for the
winner's commit and then finds ``used_at`` set, so two replicas cannot both use one password; on
SQLite writers take turns. Every change is audited in its own database transaction: minting
(``otp.create``, one row per batch, never the secrets), use (``otp.use``), giving a password back
after an enrollment that failed with it (``otp.release``), revocation (``otp.revoke``: the password
expires now) and pruning (``otp.prune``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, delete, insert, select, update

from scep_server.store.audit_chain import SCEP, Actor, AuditEntry, append
from scep_server.store.base import Repository, aware, check_length, check_page, guard, utcnow
from scep_server.store.tables import DIGEST_LENGTH, PROFILE_LENGTH, TRANSACTION_ID_LENGTH, otp_challenges

__all__ = [
    "OTP_CREATE",
    "OTP_PRUNE",
    "OTP_RELEASE",
    "OTP_REVOKE",
    "OTP_USE",
    "OtpRecord",
    "OtpRepository",
]

OTP_CREATE = "otp.create"
OTP_USE = "otp.use"
OTP_RELEASE = "otp.release"
OTP_REVOKE = "otp.revoke"
OTP_PRUNE = "otp.prune"
MAX_BATCH = 100  # passwords one create adds at most

_c = otp_challenges.c


@dataclass(frozen=True, slots=True)
class OtpRecord:
    """One stored password, without its hash."""

    id: int
    profile: str
    subject_pattern: str | None
    created_at: datetime
    expires_at: datetime
    created_by: str
    used_at: datetime | None
    used_by_transaction: str | None

    def usable(self, now: datetime) -> bool:
        return self.used_at is None and self.expires_at > now


class OtpRepository(Repository):
    """The one-time password ledger."""

    def add_otps(
        self, *, profile: str, secret_hashes: Sequence[str], subject_pattern: str | None, expires_at: datetime,
        actor: Actor, ttl_seconds: int,
    ) -> list[OtpRecord]:
        """Store one row per hash, audited as one ``otp.create`` of ``actor``'s in the same transaction."""
        _check_hashes(secret_hashes)
        check_length(profile, PROFILE_LENGTH, "profile")
        now, until = utcnow(), aware(expires_at, "expires_at")
        rows = [
            {"profile": profile, "secret_hash": digest, "subject_pattern": subject_pattern, "created_at": now,
             "expires_at": until, "created_by": actor.name}
            for digest in secret_hashes
        ]
        with guard(), self._writer.begin() as conn:
            conn.execute(insert(otp_challenges), rows)
            query = select(otp_challenges).where(_c.secret_hash.in_(secret_hashes)).order_by(_c.id)
            added = [_record(row) for row in conn.execute(query)]
            detail = {
                "profile": profile, "count": len(added), "ttl_seconds": ttl_seconds, "expires_at": until.isoformat(),
                "subject_pattern": subject_pattern, "ids": [record.id for record in added],
            }
            append(conn, AuditEntry(actor, OTP_CREATE, f"otp profile={profile}", detail))
        return added

    def find_otp(self, secret_hash: str) -> OtpRecord | None:
        """The password whose SHA-256 is ``secret_hash``, used or not."""
        with guard(), self._engine.connect() as conn:
            row = conn.execute(select(otp_challenges).where(_c.secret_hash == secret_hash)).one_or_none()
        return None if row is None else _record(row)

    def consume_otp(self, *, secret_hash: str, profile: str, transaction_id: str, now: datetime) -> bool:
        """Mark the password used by ``transaction_id`` if it is ``profile``'s, unused and unexpired at
        ``now``, audited as ``otp.use`` in the same transaction; whether this call was the one that did."""
        check_length(transaction_id, TRANSACTION_ID_LENGTH, "transaction_id")
        at = aware(now, "now")
        statement = (
            update(otp_challenges)
            .where(_c.secret_hash == secret_hash, _c.profile == profile, _c.used_at.is_(None), _c.expires_at > at)
            .values(used_at=at, used_by_transaction=transaction_id)
        )
        with guard(), self._writer.begin() as conn:
            if conn.execute(statement).rowcount != 1:
                return False
            otp_id = conn.execute(select(_c.id).where(_c.secret_hash == secret_hash)).scalar_one()
            detail = {"profile": profile, "transaction_id": transaction_id}
            append(conn, AuditEntry(SCEP, OTP_USE, f"otp={otp_id}", detail))
        return True

    def release_otp(self, *, secret_hash: str, profile: str, transaction_id: str) -> bool:
        """Make ``profile``'s password unused again if ``transaction_id`` used it (its enrollment failed),
        audited as ``otp.release``; whether it was released. It keeps its expiry."""
        mine = (_c.secret_hash == secret_hash, _c.profile == profile, _c.used_by_transaction == transaction_id)
        with guard(), self._writer.begin() as conn:
            otp_id = conn.execute(select(_c.id).where(*mine)).scalar_one_or_none()
            if otp_id is None or conn.execute(
                update(otp_challenges).where(*mine).values(used_at=None, used_by_transaction=None)
            ).rowcount != 1:
                return False
            detail = {"profile": profile, "transaction_id": transaction_id}
            append(conn, AuditEntry(SCEP, OTP_RELEASE, f"otp={otp_id}", detail))
        return True

    def revoke_otp(self, otp_id: int, *, at: datetime, actor: Actor) -> tuple[OtpRecord, bool] | None:
        """Expire an unused password at ``at``, audited as ``otp.revoke`` when it changed anything; the
        password as it is now and whether it changed, None if there is none."""
        when = aware(at, "at")
        statement = (
            update(otp_challenges)
            .where(_c.id == otp_id, _c.used_at.is_(None), _c.expires_at > when)
            .values(expires_at=when)
        )
        with guard(), self._writer.begin() as conn:
            changed = conn.execute(statement).rowcount == 1
            if changed:
                append(conn, AuditEntry(actor, OTP_REVOKE, f"otp={otp_id}", {}))
            row = conn.execute(select(otp_challenges).where(_c.id == otp_id)).one_or_none()
        return None if row is None else (_record(row), changed)

    def list_otps(
        self, *, profile: str | None = None, before_id: int | None = None, limit: int = 100
    ) -> list[OtpRecord]:
        """Passwords, newest first; ``before_id`` keeps those before that one, to page on."""
        check_page(limit)
        query = select(otp_challenges)
        if profile is not None:
            query = query.where(_c.profile == profile)
        if before_id is not None:
            query = query.where(_c.id < before_id)
        with guard(), self._engine.connect() as conn:
            rows = conn.execute(query.order_by(_c.id.desc()).limit(limit)).all()
        return [_record(row) for row in rows]

    def prune_otps(self, *, expired_before: datetime, actor: Actor) -> int:
        """Delete the passwords, used or not, that expired before ``expired_before``, audited as
        ``otp.prune`` when any went; how many."""
        before = aware(expired_before, "expired_before")
        with guard(), self._writer.begin() as conn:
            removed = conn.execute(delete(otp_challenges).where(_c.expires_at < before)).rowcount
            if removed:
                detail = {"count": removed, "expired_before": before.isoformat()}
                append(conn, AuditEntry(actor, OTP_PRUNE, "otp", detail))
        return int(removed)


def _check_hashes(secret_hashes: Sequence[str]) -> None:
    if not 1 <= len(secret_hashes) <= MAX_BATCH:
        raise ValueError(f"from 1 to {MAX_BATCH} passwords at a time")
    if any(len(digest) != DIGEST_LENGTH for digest in secret_hashes):
        raise ValueError("a secret hash must be a hex SHA-256")


def _record(row: Row[object]) -> OtpRecord:
    m = row._mapping
    return OtpRecord(
        id=int(m["id"]), profile=m["profile"], subject_pattern=m["subject_pattern"], created_at=m["created_at"],
        expires_at=m["expires_at"], created_by=m["created_by"], used_at=m["used_at"],
        used_by_transaction=m["used_by_transaction"],
    )
