"""Published CRLs: the one CRL every process serves, whichever process built it.

A CRL is stored with its CRLNumber (allocated by ``Store.next_crl_number``, so numbers only grow
across processes) and with how many revoked certificates the store held when it was built: a reader
that has counted more knows the CRL misses a revocation. Readers ask for the newest CRL only when it
is newer than the one they have (``latest_crl(newer_than=...)``), so looking is one indexed query and
the DER crosses the wire once per CRL. Only the newest ``KEEP`` CRLs of an issuer are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, delete, insert, select

from scep_server.store.base import Repository, aware, guard, utcnow
from scep_server.store.tables import published_crls

_c = published_crls.c
KEEP = 8


@dataclass(frozen=True, slots=True)
class PublishedCrlRecord:
    issuer: str
    crl_number: int
    der: bytes
    this_update: datetime
    next_update: datetime
    revoked_count: int
    published_at: datetime


class CrlRepository(Repository):
    """The published-CRL methods of ``Store``."""

    def store_crl(
        self, *, issuer: str, crl_number: int, der: bytes, this_update: datetime, next_update: datetime,
        revoked_count: int,
    ) -> None:
        """Keep a CRL just built; older ones beyond the newest ``KEEP`` of the issuer are dropped."""
        if crl_number < 1 or revoked_count < 0 or not der:
            raise ValueError("a CRL needs a positive number, a revoked count and its DER")
        row = {
            "issuer": issuer, "crl_number": crl_number, "der": der, "revoked_count": revoked_count,
            "this_update": aware(this_update, "this_update"), "next_update": aware(next_update, "next_update"),
            "published_at": utcnow(),
        }
        kept = select(_c.crl_number).where(_c.issuer == issuer).order_by(_c.crl_number.desc()).limit(KEEP)
        with guard(), self._writer.begin() as conn:
            conn.execute(insert(published_crls).values(**row))
            conn.execute(delete(published_crls).where(_c.issuer == issuer, _c.crl_number.not_in(kept)))

    def latest_crl(self, issuer: str, *, newer_than: int = 0) -> PublishedCrlRecord | None:
        """The issuer's CRL with the highest number, if that number is above ``newer_than``."""
        query = (
            select(published_crls)
            .where(_c.issuer == issuer, _c.crl_number > newer_than)
            .order_by(_c.crl_number.desc())
            .limit(1)
        )
        with guard(), self._engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else _record(row)


def _record(row: Row[object]) -> PublishedCrlRecord:
    m = row._mapping
    return PublishedCrlRecord(
        issuer=m["issuer"], crl_number=int(m["crl_number"]), der=bytes(m["der"]), this_update=m["this_update"],
        next_update=m["next_update"], revoked_count=int(m["revoked_count"]), published_at=m["published_at"],
    )
