"""Certificates bound to a device: the ones the device lifecycle sync looks at, their OCSP holds, Graph delta links.

A hold (``device_hold_at``) makes OCSP answer the certificate revoked (certificateHold) while its device is
disabled; the CRL never lists it, and releasing it makes the certificate good again. Every change of holds
also moves the ``device-holds`` row of ``device_sync_state`` (its ``updated_at``), in the same transaction,
so that every process's OCSP cache notices it (:meth:`DeviceRepository.holds_changed_at`). Holds and
releases are audited (``certificate.hold``, ``certificate.release``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from scep_server.errors import StoreUnavailable
from scep_server.store.audit_chain import Actor, AuditEntry, append
from scep_server.store.base import RACE_ATTEMPTS, Repository, aware, check_page, guard, utcnow
from scep_server.store.certificates import VALID_CERT
from scep_server.store.serials import serial_hex
from scep_server.store.tables import certificates, device_sync_state

__all__ = ["HOLD_ACTION", "HOLDS_STATE", "RELEASE_ACTION", "DeviceBinding", "DeviceRepository"]

HOLDS_STATE = "device-holds"  # the device_sync_state row whose updated_at moves with every change of holds
HOLD_ACTION = "certificate.hold"
RELEASE_ACTION = "certificate.release"


@dataclass(frozen=True, slots=True)
class DeviceBinding:
    """A valid certificate and the device behind it; ``row_id`` orders the sync's batches."""

    row_id: int
    serial: int
    issuer: str
    profile: str
    device_id: str
    device_id_kind: str
    held_since: datetime | None


class DeviceRepository(Repository):
    """The device lifecycle sync's reads and writes."""

    def bound_certificates(
        self, *, profiles: Sequence[str], now: datetime, after_id: int = 0, limit: int = 500
    ) -> list[DeviceBinding]:
        """Valid, unexpired certificates of ``profiles`` that name a device, by row id after ``after_id``."""
        check_page(limit)
        if not profiles:
            return []
        c = certificates.c
        query = (
            select(c.id, c.serial_hex, c.issuer, c.profile, c.device_id, c.device_id_kind, c.device_hold_at)
            .where(VALID_CERT, c.device_id.is_not(None), c.device_id_kind.is_not(None), c.profile.in_(profiles),
                   c.not_after > aware(now, "now"), c.id > after_id)
            .order_by(c.id)
            .limit(limit)
        )
        with guard(), self._engine.connect() as conn:
            return [DeviceBinding(row.id, int(row.serial_hex, 16), row.issuer, row.profile, row.device_id,
                                  row.device_id_kind, row.device_hold_at) for row in conn.execute(query)]

    def hold(self, row_ids: Sequence[int], *, at: datetime, actor: Actor) -> int:
        """Hold the valid certificates ``row_ids`` that are not held yet; how many were."""
        c = certificates.c
        wanted = and_(c.id.in_(row_ids), VALID_CERT, c.device_hold_at.is_(None))
        return self._change(wanted, {"device_hold_at": aware(at, "at")}, HOLD_ACTION, actor)

    def release(self, row_ids: Sequence[int], *, actor: Actor) -> int:
        """Release the held certificates ``row_ids``: OCSP answers them good again; how many were held."""
        c = certificates.c
        return self._change(and_(c.id.in_(row_ids), c.device_hold_at.is_not(None)), {"device_hold_at": None},
                            RELEASE_ACTION, actor)

    def release_outside(self, profiles: Sequence[str], *, actor: Actor) -> int:
        """Release every hold on a certificate of a profile not in ``profiles`` (no longer ``ocsp-only``)."""
        c = certificates.c
        others = c.profile.not_in(profiles) if profiles else c.profile.is_not(None)
        return self._change(and_(c.device_hold_at.is_not(None), others), {"device_hold_at": None},
                            RELEASE_ACTION, actor)

    def holds_changed_at(self) -> datetime | None:
        """When holds last changed (None: never), for caches of OCSP answers in every process."""
        query = select(device_sync_state.c.updated_at).where(device_sync_state.c.name == HOLDS_STATE)
        with guard(), self._engine.connect() as conn:
            return conn.execute(query).scalar_one_or_none()

    def delta_link(self, name: str) -> str | None:
        """The Graph delta link kept under ``name`` (None: start a delta query afresh)."""
        query = select(device_sync_state.c.delta_link).where(device_sync_state.c.name == name)
        with guard(), self._engine.connect() as conn:
            return conn.execute(query).scalar_one_or_none()

    def save_delta_link(self, name: str, link: str | None) -> None:
        """Keep ``link`` under ``name`` (None forgets it)."""
        with guard():
            for _ in range(RACE_ATTEMPTS):
                try:
                    with self._writer.begin() as conn:
                        _put_state(conn, name, link)
                    return
                except IntegrityError:
                    continue  # another process created the row first: update it instead
        raise StoreUnavailable(f"the device sync state {name!r} kept colliding; retry later")

    def holds_valid_certificate(self, *, subject: str | None, device_id: str | None, now: datetime) -> bool:
        """Whether a valid, unexpired certificate has this subject (RFC 4514, as stored) or names this device."""
        c = certificates.c
        named = [c.subject == subject] if subject else []
        named += [c.device_id == device_id] if device_id else []
        if not named:
            return False
        query = select(exists().where(VALID_CERT, c.not_after > aware(now, "now"), or_(*named)))
        with guard(), self._engine.connect() as conn:
            return bool(conn.execute(query).scalar())

    def _change(self, wanted: Any, values: dict[str, Any], action: str, actor: Actor) -> int:
        c = certificates.c
        with guard(), self._writer.begin() as conn:
            rows = conn.execute(select(c.id, c.serial_hex, c.issuer, c.profile, c.device_id).where(wanted)).all()
            if not rows:
                return 0
            conn.execute(update(certificates).where(c.id.in_([row.id for row in rows])).values(**values))
            _put_state(conn, HOLDS_STATE, None)
            for row in rows:
                subject = f"serial={serial_hex(int(row.serial_hex, 16))} issuer={row.issuer}"
                append(conn, AuditEntry(actor, action, subject, {"profile": row.profile, "device_id": row.device_id}))
        return len(rows)


def _put_state(conn: Connection, name: str, link: str | None) -> None:
    now = utcnow()
    mine = device_sync_state.c.name == name
    if not conn.execute(update(device_sync_state).where(mine).values(delta_link=link, updated_at=now)).rowcount:
        conn.execute(insert(device_sync_state).values(name=name, delta_link=link, updated_at=now))
