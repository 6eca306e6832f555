"""The device repository on SQLite and PostgreSQL: bound certificates, holds and their stamp, delta links."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from scep_server.store import Actor, CertStatus, Store
from scep_server.store.devices import HOLD_ACTION, RELEASE_ACTION

from .conftest import CertificateFactory

ACTOR = Actor("graph:device-lifecycle", "device-lifecycle")
ISSUER = "CN=Test CA,O=scep-server"


def _bind(store: Store, make_certificate: CertificateFactory, serial: int, *, profile: str = "default",
          device_id: str | None = None, kind: str = "intune", **overrides: object) -> str:
    device = device_id or str(uuid.uuid4())
    store.record_issued(profile=profile, transaction_id=None, certificate=make_certificate(
        serial, profile=profile, device_id=device, device_id_kind=kind, **overrides))
    return device


def test_the_device_is_stored_and_read_back(store: Store, make_certificate: CertificateFactory) -> None:
    device = _bind(store, make_certificate, 0x10, kind="entra")
    record = store.get_certificate(0x10, ISSUER)
    assert record is not None
    assert (record.device_id, record.device_id_kind, record.device_hold_at) == (device, "entra", None)
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(0x11))
    plain = store.get_certificate(0x11, ISSUER)
    assert plain is not None and (plain.device_id, plain.device_id_kind) == (None, None)


def test_bound_certificates_are_the_valid_unexpired_ones_of_the_profiles(
    store: Store, make_certificate: CertificateFactory
) -> None:
    now = datetime.now(UTC)
    _bind(store, make_certificate, 0x20)
    _bind(store, make_certificate, 0x21, profile="other")
    _bind(store, make_certificate, 0x22, not_after=now - timedelta(seconds=1))
    _bind(store, make_certificate, 0x23)
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(0x24))
    store.revocations.revoke(0x23, ISSUER, reason=5, revoked_at=now)
    bound = store.devices.bound_certificates(profiles=["default"], now=now)
    assert [binding.serial for binding in bound] == [0x20]
    assert [b.serial for b in store.devices.bound_certificates(profiles=["default", "other"], now=now)] == [0x20, 0x21]


def test_holds_and_releases_move_the_stamp_and_are_audited(store: Store, make_certificate: CertificateFactory) -> None:
    _bind(store, make_certificate, 0x30)
    _bind(store, make_certificate, 0x31, profile="other")
    now = datetime.now(UTC).replace(microsecond=0)
    ids = {b.serial: b.row_id for b in store.devices.bound_certificates(profiles=["default", "other"], now=now)}
    assert store.holds_changed_at() is None
    assert store.devices.hold(list(ids.values()), at=now, actor=ACTOR) == 2
    first = store.holds_changed_at()
    assert first is not None
    assert store.devices.hold(list(ids.values()), at=now, actor=ACTOR) == 0  # held already: nothing changes
    assert store.holds_changed_at() == first
    record = store.get_certificate(0x30, ISSUER)
    assert record is not None and record.device_hold_at == now and record.status is CertStatus.VALID
    assert store.devices.release_outside(["default"], actor=ACTOR) == 1  # 0x31's profile holds no more
    assert store.devices.release([ids[0x30]], actor=ACTOR) == 1
    assert store.devices.release([ids[0x30]], actor=ACTOR) == 0
    last = store.holds_changed_at()
    assert last is not None and last >= first
    actions = [row.action for row in store.list_audit(limit=20)]
    assert actions.count(HOLD_ACTION) == 2 and actions.count(RELEASE_ACTION) == 2
    assert store.verify_audit().intact


def test_delta_links_are_kept_by_name(store: Store) -> None:
    assert store.devices.delta_link("entra-devices") is None
    store.devices.save_delta_link("entra-devices", "https://graph.example/v1.0/devices/delta?$deltatoken=a")
    store.devices.save_delta_link("entra-devices", "https://graph.example/v1.0/devices/delta?$deltatoken=b")
    assert store.devices.delta_link("entra-devices") == "https://graph.example/v1.0/devices/delta?$deltatoken=b"
    store.devices.save_delta_link("entra-devices", None)
    assert store.devices.delta_link("entra-devices") is None


def test_a_valid_certificate_is_found_by_subject_or_device(store: Store, make_certificate: CertificateFactory) -> None:
    now = datetime.now(UTC)
    device = _bind(store, make_certificate, 0x40, subject="CN=laptop")
    assert store.devices.holds_valid_certificate(subject="CN=laptop", device_id=None, now=now)
    assert store.devices.holds_valid_certificate(subject="CN=other", device_id=device, now=now)
    assert not store.devices.holds_valid_certificate(subject="CN=other", device_id=str(uuid.uuid4()), now=now)
    assert not store.devices.holds_valid_certificate(subject=None, device_id=None, now=now)
    store.revocations.revoke(0x40, ISSUER, reason=4, revoked_at=now)
    assert not store.devices.holds_valid_certificate(subject="CN=laptop", device_id=device, now=now)
