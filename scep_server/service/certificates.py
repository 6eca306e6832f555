"""The operators' view of issued certificates: list, show, search and revoke, for the CLI and the admin API.

Both surfaces describe a stored certificate the same way: :func:`describe` gives its JSON-ready fields
(the admin API's body), :func:`text_rows` the same fields labelled for a terminal (``certs show``).
Revocations go through the :class:`~scep_server.service.revocation.RevocationService`, so the CRL and
OCSP answers follow at once; their outcome comes back as a value, not a store exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scep_server.pki.reasons import CRLReason
from scep_server.service.revocation import RevocationService
from scep_server.store import (
    AlreadyRevoked,
    CertificateNotFound,
    CertificateRecord,
    CertStatus,
    Store,
    parse_serial_hex,
)

__all__ = [
    "STATUSES",
    "CertificateQueries",
    "NoSuchCertificate",
    "RevokeAnswer",
    "Revoked",
    "WasRevoked",
    "describe",
    "device_fields",
    "parse_serial",
    "pem",
    "text_rows",
]

STATUSES = tuple(status.value for status in CertStatus)  # what ``status`` filters accept: valid, revoked


@dataclass(frozen=True, slots=True)
class Revoked:
    """The certificate is revoked now; ``certificate`` is its new stored state."""

    certificate: CertificateRecord


@dataclass(frozen=True, slots=True)
class WasRevoked:
    """The certificate had been revoked before; nothing changed."""

    certificate: CertificateRecord


@dataclass(frozen=True, slots=True)
class NoSuchCertificate:
    """The issuer never issued ``serial``."""

    serial: int


RevokeAnswer = Revoked | WasRevoked | NoSuchCertificate


class CertificateQueries:
    """Certificates of ``issuer`` (the CA's subject as RFC 4514); without one, lookups take any issuer's."""

    def __init__(self, store: Store, revocations: RevocationService, *, issuer: str | None = None) -> None:
        self._store = store
        self._revocations = revocations
        self._issuer = issuer

    def page(
        self, *, limit: int = 100, status: str | None = None, profile: str | None = None
    ) -> list[CertificateRecord]:
        """A page of certificates, newest first; ``status`` one of :data:`STATUSES` (ValueError otherwise)."""
        wanted = CertStatus(status) if status is not None else None
        return self._store.list_certificates(limit=limit, status=wanted, profile=profile)

    def show(self, serial: int) -> CertificateRecord | None:
        """The certificate with this serial (the newest of any issuer when the queries have none)."""
        return self._store.get_certificate(serial, self._issuer)

    def search(self, subject: str) -> list[CertificateRecord]:
        """The certificates issued to ``subject`` (RFC 4514, exactly as stored), newest first."""
        if self._issuer is None:
            raise ValueError("searching by subject needs the issuer")
        return self._store.find_certificates_by_subject(self._issuer, subject)

    def revoke(
        self, serial: int, *, reason: CRLReason | str, issuer: str | None = None, actor: str = "server",
        source: str = "service", comment: str | None = None,
    ) -> RevokeAnswer:
        """Revoke the certificate, audited as ``actor``'s through ``source`` with ``comment`` if given (see
        ``RevocationService.revoke``); ``UnknownRevocationReason`` for a reason name that cannot revoke,
        ``ValueError`` for a comment that cannot be recorded."""
        try:
            revoked = self._revocations.revoke(
                serial, reason=reason, issuer=issuer or self._issuer, actor=actor, source=source, comment=comment
            )
            return Revoked(revoked)
        except CertificateNotFound:
            return NoSuchCertificate(serial)
        except AlreadyRevoked as exc:
            return WasRevoked(exc.certificate)


def parse_serial(text: str) -> int:
    """A serial number as people write it (hex, optional ``0x``, ``:`` or spaces); ValueError unless it is
    one this CA can have issued (positive, at most 20 octets)."""
    return parse_serial_hex(text)


def pem(record: CertificateRecord) -> str:
    """The stored certificate in PEM."""
    return x509.load_der_x509_certificate(record.der).public_bytes(Encoding.PEM).decode()


def describe(record: CertificateRecord) -> dict[str, Any]:
    """The stored certificate as JSON-ready values (the requester's address stays out: see ``text_rows``;
    the device behind it: ``device_fields``)."""
    return {
        "serial": f"{record.serial:x}",
        "subject": record.subject,
        "issuer": record.issuer,
        "sans": list(record.sans),
        "status": record.status.value,
        "profile": record.profile,
        "transaction_id": record.transaction_id,
        "not_before": record.not_before.isoformat(),
        "not_after": record.not_after.isoformat(),
        "issued_at": record.issued_at.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "revocation_reason": record.revocation_reason,
        "sha1_thumbprint": record.sha1_thumbprint,
        "sha256_thumbprint": record.sha256_thumbprint,
    }


def device_fields(record: CertificateRecord) -> dict[str, Any]:
    """The device behind the certificate as JSON-ready values: ``device_id`` and ``device_id_kind``
    (``intune`` or ``entra``, None when the certificate names no device), and ``device_hold_at``, set
    while OCSP answers it certificateHold because that device is disabled."""
    return {
        "device_id": record.device_id,
        "device_id_kind": record.device_id_kind,
        "device_hold_at": record.device_hold_at.isoformat() if record.device_hold_at else None,
    }


_LABELS = (
    ("serial", "serial"),
    ("status", "status"),
    ("subject", "subject"),
    ("issuer", "issuer"),
    ("sans", "SANs"),
    ("not_before", "not before"),
    ("not_after", "not after"),
    ("profile", "profile"),
    ("transaction_id", "transaction"),
    ("requester_ip", "requester"),
    ("issued_at", "issued at"),
    ("sha1_thumbprint", "SHA-1"),
    ("sha256_thumbprint", "SHA-256"),
    ("device_id", "device id"),
    ("device_id_kind", "device id kind"),
)
_REVOCATION_LABELS = (("revoked_at", "revoked at"), ("revocation_reason", "reason"))
_HOLD_LABELS = (("device_hold_at", "on hold since"),)  # OCSP answers certificateHold: its device is disabled


def text_rows(record: CertificateRecord) -> list[tuple[str, str]]:
    """:func:`describe`'s fields and the requester's address, labelled for a terminal; absent values are
    ``-`` and the revocation rows appear once revoked. The caller escapes what a device chose (names)."""
    fields = describe(record) | device_fields(record) | {"requester_ip": record.requester_ip}
    rows = [(label, _text(fields[key])) for key, label in _LABELS]
    if record.revoked_at is not None:
        rows += [(label, _text(fields[key])) for key, label in _REVOCATION_LABELS]
    if record.device_hold_at is not None:
        rows += [(label, _text(fields[key])) for key, label in _HOLD_LABELS]
    return rows


def _text(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "-"
    return "-" if value is None else str(value)
