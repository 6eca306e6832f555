"""Revoking certificates: the one entry point for the CLI, the admin API and the Intune revocation worker.

A revocation is recorded in the store (once: a second attempt raises ``AlreadyRevoked`` and adds
nothing), then every revocation cache of this process is told, so the next CRL and OCSP answer it
serves include it. Other processes notice through their :class:`~scep_server.service.publishing.RevocationWatch`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Protocol

from cryptography import x509

from scep_server.errors import ScepServerError
from scep_server.pki.names import parse_name
from scep_server.store import CertificateRecord, Store

log = logging.getLogger(__name__)

# A revocation time a little ahead is clock skew between hosts; much further is a mistake.
FUTURE_TOLERANCE = timedelta(minutes=5)


class RevocationReason(IntEnum):
    """The CRLReason codes a certificate can be revoked with (RFC 5280 §5.3.1).

    removeFromCRL (8) is absent: it only lifts a certificateHold in a delta CRL, and revocations here
    are final, a hold included.
    """

    UNSPECIFIED = 0
    KEY_COMPROMISE = 1
    CA_COMPROMISE = 2
    AFFILIATION_CHANGED = 3
    SUPERSEDED = 4
    CESSATION_OF_OPERATION = 5
    CERTIFICATE_HOLD = 6
    PRIVILEGE_WITHDRAWN = 9
    AA_COMPROMISE = 10

    @property
    def rfc_name(self) -> str:
        """The ASN.1 name, as RFC 5280 writes it: ``keyCompromise``, ``cACompromise``, ..."""
        return _RFC_NAMES[self]

    @classmethod
    def from_name(cls, name: str) -> RevocationReason:
        """The reason named ``name``, ignoring case, ``_`` and ``-`` (``keyCompromise``, ``key_compromise``)."""
        wanted = _fold(name)
        for reason, rfc_name in _RFC_NAMES.items():
            if _fold(rfc_name) == wanted:
                return reason
        raise UnknownRevocationReason(name)


_RFC_NAMES = {
    RevocationReason.UNSPECIFIED: "unspecified",
    RevocationReason.KEY_COMPROMISE: "keyCompromise",
    RevocationReason.CA_COMPROMISE: "cACompromise",
    RevocationReason.AFFILIATION_CHANGED: "affiliationChanged",
    RevocationReason.SUPERSEDED: "superseded",
    RevocationReason.CESSATION_OF_OPERATION: "cessationOfOperation",
    RevocationReason.CERTIFICATE_HOLD: "certificateHold",
    RevocationReason.PRIVILEGE_WITHDRAWN: "privilegeWithdrawn",
    RevocationReason.AA_COMPROMISE: "aACompromise",
}
REASON_NAMES = tuple(_RFC_NAMES.values())


def _fold(name: str) -> str:
    return name.strip().replace("_", "").replace("-", "").lower()


class UnknownRevocationReason(ScepServerError):
    """``name`` is not a reason a certificate can be revoked with; ``REASON_NAMES`` lists those."""

    def __init__(self, name: str) -> None:
        hint = " (it only un-holds in delta CRLs)" if _fold(name) == "removefromcrl" else ""
        super().__init__(f"{name!r} is not a revocation reason{hint}; use one of {', '.join(REASON_NAMES)}")
        self.name = name


class RevocationCache(Protocol):
    """Something that serves revocation status and must drop it when a certificate is revoked."""

    def invalidate(self) -> None: ...


class RevocationService:
    """Revokes certificates of ``issuer`` (the CA's subject as RFC 4514) unless told another issuer."""

    def __init__(
        self,
        store: Store,
        *,
        issuer: str,
        caches: Sequence[RevocationCache] = (),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._issuer = issuer
        self._caches = tuple(caches)
        self._now = now

    def revoke(
        self,
        serial: int,
        *,
        reason: RevocationReason | str,
        issuer: str | x509.Name | None = None,
        revoked_at: datetime | None = None,
    ) -> CertificateRecord:
        """Revoke the certificate and return its stored state.

        Raises ``CertificateNotFound`` for a serial the issuer never issued, ``AlreadyRevoked`` when it
        is revoked already (nothing changes then), ``UnknownRevocationReason`` for a reason name that
        cannot revoke. ``revoked_at`` (timezone-aware, default now) may lie in the past: the time the
        revocation was decided elsewhere, say.
        """
        code = reason if isinstance(reason, RevocationReason) else RevocationReason.from_name(reason)
        when = self._revocation_time(revoked_at)
        issuer_name = self._issuer_name(issuer)
        record = self._store.revoke(serial, issuer_name, reason=int(code), revoked_at=when)
        for cache in self._caches:
            cache.invalidate()
        log.info("revoked serial=%x issuer=%r reason=%s", serial, issuer_name, code.rfc_name)
        return record

    def _revocation_time(self, revoked_at: datetime | None) -> datetime:
        now = self._now()
        if revoked_at is None:
            return now
        if revoked_at.utcoffset() is None:
            raise ValueError("revoked_at must be timezone-aware")
        if revoked_at > now + FUTURE_TOLERANCE:
            raise ValueError("revoked_at lies in the future")
        return revoked_at

    def _issuer_name(self, issuer: str | x509.Name | None) -> str:
        if issuer is None:
            return self._issuer
        if isinstance(issuer, x509.Name):
            return issuer.rfc4514_string()
        try:  # the store keys certificates by cryptography's RFC 4514 form: 'CN = x, O = y' becomes 'CN=x,O=y'
            return parse_name(issuer).rfc4514_string()
        except ValueError:
            return issuer  # not a name: the store will not find it
