"""Issued certificates: how a certificate is stored and read back, and the queries over them.

A certificate is unique per (issuer, serial); ``sans`` is stored as a JSON array. Storing one, alone
or for its SCEP transaction, is in ``deliveries.py``; revoking one in ``revocations.py``.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Row, Select, func, select
from sqlalchemy.sql.elements import ColumnElement

from scep_server.store.base import Repository, aware, check_length, check_page, guard, utcnow
from scep_server.store.records import CertificateRecord, CertStatus, NewCertificate
from scep_server.store.serials import serial_hex
from scep_server.store.tables import (
    DEVICE_ID_LENGTH,
    IP_LENGTH,
    PROFILE_LENGTH,
    TRANSACTION_ID_LENGTH,
    certificates,
)

DEVICE_ID_KIND_LENGTH = 16

VALID_CERT = certificates.c.status == CertStatus.VALID.value


class CertificateRepository(Repository):
    """Reading stored certificates."""

    def get_certificate(self, serial: int, issuer: str | None = None) -> CertificateRecord | None:
        """The certificate with this serial; without ``issuer``, the newest one of any issuer."""
        query = certificate_query(serial, issuer)
        with guard(), self._engine.connect() as conn:
            row = conn.execute(query).one_or_none()
        return None if row is None else certificate_record(row)

    def find_certificates_by_subject(self, issuer: str, subject: str) -> list[CertificateRecord]:
        """Certificates of this issuer and subject, newest first (RFC 8894 §3.3.3 CertPoll)."""
        query = (
            select(certificates)
            .where(certificates.c.issuer == issuer, certificates.c.subject == subject)
            .order_by(certificates.c.issued_at.desc(), certificates.c.id.desc())
        )
        return self._certificate_list(query)

    def list_certificates(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        status: CertStatus | None = None,
        profile: str | None = None,
    ) -> list[CertificateRecord]:
        """A page of certificates, newest first."""
        check_page(limit, offset)
        query = select(certificates).order_by(certificates.c.issued_at.desc(), certificates.c.id.desc())
        if status is not None:
            query = query.where(certificates.c.status == CertStatus(status).value)
        if profile is not None:
            query = query.where(certificates.c.profile == profile)
        return self._certificate_list(query.limit(limit).offset(offset))

    def count_certificates(self, *, status: CertStatus | None = None) -> int:
        query = select(func.count()).select_from(certificates)
        if status is not None:
            query = query.where(certificates.c.status == CertStatus(status).value)
        with guard(), self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def _certificate_list(self, query: Select[Any]) -> list[CertificateRecord]:
        with guard(), self._engine.connect() as conn:
            return [certificate_record(row) for row in conn.execute(query)]


def certificate_query(serial: int, issuer: str | None) -> Select[Any]:
    """The certificate with this serial of ``issuer``, or of any issuer the newest one."""
    query = select(certificates).where(certificates.c.serial_hex == serial_hex(serial))
    if issuer is not None:
        query = query.where(certificates.c.issuer == issuer)
    return query.order_by(certificates.c.id.desc()).limit(1)


def certificate_key(serial: int, issuer: str) -> ColumnElement[bool]:
    return (certificates.c.issuer == issuer) & (certificates.c.serial_hex == serial_hex(serial))


def certificate_values(certificate: NewCertificate) -> dict[str, Any]:
    """The row of a newly issued certificate: VALID, issued now."""
    check_length(certificate.profile, PROFILE_LENGTH, "profile")
    check_length(certificate.transaction_id, TRANSACTION_ID_LENGTH, "transaction_id")
    check_length(certificate.requester_ip, IP_LENGTH, "requester_ip")
    check_length(certificate.device_id, DEVICE_ID_LENGTH, "device_id")
    check_length(certificate.device_id_kind, DEVICE_ID_KIND_LENGTH, "device_id_kind")
    return {
        "serial_hex": serial_hex(certificate.serial),
        "issuer": certificate.issuer,
        "subject": certificate.subject,
        "sans": json.dumps(list(certificate.sans), separators=(",", ":")),
        "not_before": aware(certificate.not_before, "not_before"),
        "not_after": aware(certificate.not_after, "not_after"),
        "profile": certificate.profile,
        "transaction_id": certificate.transaction_id,
        "requester_ip": certificate.requester_ip,
        "der": certificate.der,
        "sha1_thumbprint": certificate.sha1_thumbprint,
        "sha256_thumbprint": certificate.sha256_thumbprint,
        "status": CertStatus.VALID.value,
        "issued_at": utcnow(),
        "revoked_at": None,
        "revocation_reason": None,
        "device_id": certificate.device_id,
        "device_id_kind": certificate.device_id_kind,
        "device_hold_at": None,
    }


def certificate_record(row: Row[Any]) -> CertificateRecord:
    m = row._mapping
    return CertificateRecord(
        serial=int(m["serial_hex"], 16),
        issuer=m["issuer"],
        subject=m["subject"],
        sans=tuple(json.loads(m["sans"])),
        not_before=m["not_before"],
        not_after=m["not_after"],
        profile=m["profile"],
        transaction_id=m["transaction_id"],
        requester_ip=m["requester_ip"],
        der=bytes(m["der"]),
        sha1_thumbprint=m["sha1_thumbprint"],
        sha256_thumbprint=m["sha256_thumbprint"],
        status=CertStatus(m["status"]),
        issued_at=m["issued_at"],
        revoked_at=m["revoked_at"],
        revocation_reason=m["revocation_reason"],
        device_id=m.get("device_id"),
        device_id_kind=m.get("device_id_kind"),
        device_hold_at=m.get("device_hold_at"),
    )
