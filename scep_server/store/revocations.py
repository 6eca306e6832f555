"""Revoking certificates and listing the revoked ones for CRLs and OCSP, with each issuer's CRLNumber."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from scep_server.errors import StoreUnavailable
from scep_server.pki.reasons import CRLReason
from scep_server.store.base import RACE_ATTEMPTS, Repository, aware, guard, required, utcnow
from scep_server.store.certificates import VALID_CERT, certificate_key, certificate_record
from scep_server.store.records import AlreadyRevoked, CertificateNotFound, CertificateRecord, CertStatus
from scep_server.store.tables import certificates, crl_state

REVOCATION_REASONS = frozenset(int(reason) for reason in CRLReason)
# A stored certificate that was never delivered, revoked when its transaction is reclaimed or abandoned.
UNDELIVERED_REASON = int(CRLReason.CESSATION_OF_OPERATION)

RevokedEntry = tuple[int, datetime, int | None]


class RevocationRepository(Repository):
    """Revocations and the CRL numbers."""

    def revoke(self, serial: int, issuer: str, *, reason: int, revoked_at: datetime) -> CertificateRecord:
        """Revoke a VALID certificate (``reason`` is an RFC 5280 §5.3.1 CRLReason code)."""
        changes = revocation(reason, revoked_at)
        key = certificate_key(serial, issuer)
        with guard(), self._writer.begin() as conn:
            revoked = conn.execute(update(certificates).where(key & VALID_CERT).values(**changes)).rowcount
            row = conn.execute(select(certificates).where(key)).one_or_none()
        if row is None:
            raise CertificateNotFound(serial, issuer)
        record = certificate_record(row)
        if not revoked:
            raise AlreadyRevoked(record)
        return record

    def iter_revoked(self, issuer: str, *, batch_size: int = 1000) -> Iterator[RevokedEntry]:
        """(serial, revoked_at, reason) of every revoked certificate of ``issuer``, read in batches."""
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
        after = ""
        while True:
            batch = self._revoked_batch(issuer, after, batch_size)
            for hex_serial, revoked_at, reason in batch:
                yield int(hex_serial, 16), revoked_at, reason
            if len(batch) < batch_size:
                return
            after = batch[-1][0]

    def _revoked_batch(self, issuer: str, after: str, size: int) -> list[tuple[str, datetime, int | None]]:
        """Keyset page on the (issuer, serial_hex) unique index: rows with serial_hex > ``after``."""
        c = certificates.c
        query = (
            select(c.serial_hex, c.revoked_at, c.revocation_reason)
            .where(c.issuer == issuer, c.status == CertStatus.REVOKED.value, c.serial_hex > after)
            .order_by(c.serial_hex)
            .limit(size)
        )
        with guard(), self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(row.serial_hex, required(row.revoked_at), row.revocation_reason) for row in rows]


def revocation(reason: int, revoked_at: datetime) -> dict[str, Any]:
    """The changes that revoke a certificate; ``ValueError`` unless ``reason`` is a CRLReason code."""
    if reason not in REVOCATION_REASONS:
        raise ValueError(f"{reason} is not an RFC 5280 CRLReason code")
    return {"status": CertStatus.REVOKED.value, "revoked_at": aware(revoked_at, "revoked_at"),
            "revocation_reason": reason}


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
