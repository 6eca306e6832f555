"""Revoking certificates: the one entry point for the CLI, the admin API, the Intune revocation worker
and issuance (which withdraws certificates it stored but must not deliver).

A revocation is recorded in the store (once: a second attempt raises ``AlreadyRevoked`` and adds
nothing), then every revocation cache of this process is told, so the next CRL and OCSP answer it
serves include it. Other processes notice through their :class:`~scep_server.service.publishing.RevocationWatch`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509

from scep_server.errors import InvalidInput
from scep_server.pki.names import parse_name
from scep_server.pki.reasons import FINAL_REASONS, CRLReason
from scep_server.store import Actor, CertificateRecord, Store
from scep_server.store.revocations import check_comment

log = logging.getLogger(__name__)

# A revocation time a little ahead is clock skew between hosts; much further is a mistake.
FUTURE_TOLERANCE = timedelta(minutes=5)


REASON_NAMES = tuple(reason.rfc_name for reason in FINAL_REASONS)


def revocation_reason(reason: CRLReason | str) -> CRLReason:
    """The reason to revoke with, given as such or by name (ignoring case, ``_`` and ``-``:
    ``keyCompromise``, ``key_compromise``); ``UnknownRevocationReason`` for any other, removeFromCRL included."""
    try:
        code = reason if isinstance(reason, CRLReason) else CRLReason.from_name(reason)
    except ValueError:
        raise UnknownRevocationReason(str(reason)) from None
    if code not in FINAL_REASONS:
        raise UnknownRevocationReason(code.rfc_name)
    return code


def _names_remove_from_crl(name: str) -> bool:
    try:
        return CRLReason.from_name(name) is CRLReason.REMOVE_FROM_CRL
    except ValueError:
        return False


class UnknownRevocationReason(InvalidInput):
    """``name`` is not a reason a certificate can be revoked with; ``REASON_NAMES`` lists those."""

    def __init__(self, name: str) -> None:
        hint = " (it only un-holds in delta CRLs)" if _names_remove_from_crl(name) else ""
        super().__init__(f"{name!r} is not a revocation reason{hint}; use one of {', '.join(REASON_NAMES)}")
        self.name = name


class RevocationCache(Protocol):
    """Something that serves revocation status and must drop it when a certificate is revoked."""

    def invalidate(self) -> None: ...


class RevocationService:
    """Revokes certificates of ``issuer`` (the CA's subject as RFC 4514) unless told another issuer.

    ``issuers``, when given, names every CA generation's subject, the issuing one first: it is then the
    default issuer, and a serial revoked without an issuer is looked for under each (the certificates
    of a CA a rollover replaced are still revoked by serial)."""

    def __init__(
        self,
        store: Store,
        *,
        issuer: str,
        caches: Sequence[RevocationCache] = (),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        issuers: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self._store = store
        self._fixed_issuer = issuer
        self._issuers = issuers
        self._caches = tuple(caches)
        self._now = now

    @property
    def _issuer(self) -> str:
        return self._issuers()[0] if self._issuers is not None else self._fixed_issuer

    def revoke(
        self,
        serial: int,
        *,
        reason: CRLReason | str,
        issuer: str | x509.Name | None = None,
        revoked_at: datetime | None = None,
        actor: str = "server",
        source: str = "service",
        comment: str | None = None,
    ) -> CertificateRecord:
        """Revoke the certificate and return its stored state; the audit log names ``actor`` (who asked:
        ``admin-token``, ``cli:<user>``, ``intune:<request context>``) and ``source`` (``api``, ``cli``,
        ``intune-sync``), written in the same store transaction as the revocation, with the operator's
        ``comment`` if there is one (at most 500 characters, no control characters: ``ValueError``; a
        blank one is none).

        Raises ``CertificateNotFound`` for a serial the issuer never issued, ``AlreadyRevoked`` when it
        is revoked already (nothing changes then), ``UnknownRevocationReason`` for a reason name that
        cannot revoke. ``revoked_at`` (timezone-aware, default now) may lie in the past: the time the
        revocation was decided elsewhere, say.
        """
        code = revocation_reason(reason)
        note = check_comment(comment) if comment is not None and comment.strip() else None
        when = self._revocation_time(revoked_at)
        issuer_name = self._issuer_name(issuer) if issuer is not None else self._issuer_of(serial)
        by = Actor(actor, source)
        record = self._store.revocations.revoke(
            serial, issuer_name, reason=int(code), revoked_at=when, actor=by, comment=note
        )
        self._invalidate()
        log.info("revoked serial=%x issuer=%r reason=%s actor=%r source=%s", serial, issuer_name, code.rfc_name,
                 actor, source)
        return record

    def withdraw_undelivered(
        self, *, profile: str, transaction_id: str, serial: int,
        reason: CRLReason = CRLReason.CESSATION_OF_OPERATION, issuer: str | None = None,
    ) -> bool:
        """Revoke a certificate stored for a transaction that must not be delivered, in the same store
        transaction that checks it was not delivered: False, and nothing changes, when another handler
        delivered it (the transaction is ISSUED with it). ``CertificateNotFound`` if it is not stored.
        ``issuer``: the certificate's (a rollover may have made another CA the default since)."""
        withdrawn = self._store.withdraw_undelivered(
            profile=profile, transaction_id=transaction_id, serial=serial, issuer=issuer or self._issuer,
            reason=int(reason), revoked_at=self._now(),
        )
        if withdrawn:
            self._invalidate()
        return withdrawn

    def abandon(
        self, *, profile: str, transaction_id: str, before: datetime, fail_info: int, reason: str,
        revoked_at: datetime | None = None,
    ) -> int | None:
        """Fail a transaction whose stored certificate was never collected (stored before ``before``) and
        revoke that certificate (cessationOfOperation) at once; the serial revoked, or None when the
        transaction moved on meanwhile."""
        serial = self._store.abandon_transaction(
            profile=profile, transaction_id=transaction_id, before=before, fail_info=fail_info, reason=reason,
            revoked_at=revoked_at or self._now(),
        )
        if serial is not None:
            self._invalidate()
        return serial

    def _invalidate(self) -> None:
        for cache in self._caches:
            cache.invalidate()

    def _revocation_time(self, revoked_at: datetime | None) -> datetime:
        now = self._now()
        if revoked_at is None:
            return now
        if revoked_at.utcoffset() is None:
            raise ValueError("revoked_at must be timezone-aware")
        if revoked_at > now + FUTURE_TOLERANCE:
            raise ValueError("revoked_at lies in the future")
        return revoked_at

    def _issuer_of(self, serial: int) -> str:
        """The generation that issued ``serial``: the issuing one unless only another has it."""
        if self._issuers is None:
            return self._fixed_issuer
        names = self._issuers()
        return next((name for name in names if self._store.get_certificate(serial, name) is not None), names[0])

    def _issuer_name(self, issuer: str | x509.Name | None) -> str:
        if issuer is None:
            return self._issuer
        if isinstance(issuer, x509.Name):
            return issuer.rfc4514_string()
        try:  # the store keys certificates by cryptography's RFC 4514 form: 'CN = x, O = y' becomes 'CN=x,O=y'
            return parse_name(issuer).rfc4514_string()
        except ValueError:
            return issuer  # not a name: the store will not find it
