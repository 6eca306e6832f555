"""The device lifecycle sync over a real SQLite store, the real RevocationService and GraphDevices, with a
stand-in for Graph's device endpoints: revocations, holds, releases, the delta link, what is left alone."""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta

import pytest

from scep_server.config.model import DeviceLifecycle
from scep_server.intune.graph_devices import GraphDevices
from scep_server.pki.reasons import CRLReason
from scep_server.service import device_lifecycle
from scep_server.service.device_lifecycle import (
    ACTOR,
    ENTRA_DELTA_STATE,
    SOURCE,
    DeviceLifecycleSync,
    LifecyclePolicy,
)
from scep_server.service.publishing import RevocationWatch
from scep_server.service.revocation import RevocationService
from scep_server.store import CertificateRecord, CertStatus, NewCertificate, Store
from tests.unit.intune.graph_fake import FakeGraph, Refusal

from .conftest import CountingCache

ISSUER = "CN=Unit Test CA"
_serials = itertools.count(0x1000)


def _guid() -> str:
    return str(uuid.uuid4())


def _issue(store: Store, profile: str, device_id: str | None, kind: str | None = "intune", *,
           not_after: datetime | None = None) -> int:
    serial = next(_serials)
    now = datetime.now(UTC)
    store.record_issued(profile=profile, transaction_id=None, certificate=NewCertificate(
        serial=serial, issuer=ISSUER, subject=f"CN=device-{serial:x}", sans=(), not_before=now - timedelta(hours=1),
        not_after=not_after or now + timedelta(days=365), profile=profile, transaction_id=f"tx-{serial:x}",
        requester_ip=None, der=b"\x30\x00", sha1_thumbprint="aa" * 20, sha256_thumbprint="bb" * 32,
        device_id=device_id, device_id_kind=kind if device_id else None,
    ))
    return serial


def _record(store: Store, serial: int) -> CertificateRecord:
    record = store.get_certificate(serial, ISSUER)
    assert record is not None
    return record


class Tenant:
    """Devices in the fake Graph, each an Intune managed device joined to an Entra ID device."""

    def __init__(self, graph: FakeGraph) -> None:
        self.graph = graph
        self.objects: dict[str, str] = {}  # Intune id -> Entra object id
        self.entra: dict[str, str] = {}  # Intune id -> Entra device id

    def device(self) -> str:
        intune_id, entra_id, object_id = _guid(), _guid(), _guid()
        self.graph.add_device(intune_id, entra_id, object_id)
        self.objects[intune_id], self.entra[intune_id] = object_id, entra_id
        return intune_id


@pytest.fixture
def graph() -> FakeGraph:
    return FakeGraph(page_size=3)


@pytest.fixture
def tenant(graph: FakeGraph) -> Tenant:
    return Tenant(graph)


@pytest.fixture
def sleeps() -> list[float]:
    return []


POLICIES = {
    "revoking": LifecyclePolicy(DeviceLifecycle.REVOKE),
    "holding": LifecyclePolicy(DeviceLifecycle.OCSP_ONLY),
    "withdrawing": LifecyclePolicy(DeviceLifecycle.REVOKE, CRLReason.PRIVILEGE_WITHDRAWN),
}


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sync(store: Store, graph: FakeGraph, cache: CountingCache, sleeps: list[float], *,
          policies: dict[str, LifecyclePolicy] | None = None, max_wait: float = 60.0, clock: Clock | None = None,
          budget: float = 90.0, max_revocations: int = 500) -> DeviceLifecycleSync:
    revocations = RevocationService(store, issuer=ISSUER, caches=[cache])
    return DeviceLifecycleSync(store, GraphDevices(graph, sleep=sleeps.append, max_wait=max_wait), revocations,
                               POLICIES if policies is None else policies, caches=[cache], interval=3600.0,
                               budget=budget, clock=clock or Clock(), max_revocations=max_revocations)


@pytest.fixture
def sync(store: Store, graph: FakeGraph, cache: CountingCache, sleeps: list[float]) -> DeviceLifecycleSync:
    return _sync(store, graph, cache, sleeps)


def _lookups(graph: FakeGraph) -> int:
    """Requests sent in batches (managed devices and Entra ID lookups) so far."""
    return sum(count for method, _, count in graph.calls if method == "POST")


def test_a_device_deleted_or_retired_in_intune_loses_its_certificate(
    store: Store, sync: DeviceLifecycleSync, tenant: Tenant
) -> None:
    deleted, retired, wiped, fine = (tenant.device() for _ in range(4))
    serials = {device: _issue(store, "revoking", device) for device in (deleted, retired, wiped, fine)}
    del tenant.graph.managed[deleted]
    tenant.graph.managed[retired]["managementState"] = "retirePending"
    tenant.graph.managed[wiped]["managementState"] = "wipeIssued"

    report = sync.run_pass()

    assert (report.checked, report.revoked) == (4, 3)
    for device in (deleted, retired, wiped):
        record = _record(store, serials[device])
        assert record.status is CertStatus.REVOKED
        assert record.revocation_reason == CRLReason.CESSATION_OF_OPERATION
    assert _record(store, serials[fine]).status is CertStatus.VALID
    audit = [row for row in store.list_audit(limit=50) if row.action == "certificate.revoke"]
    assert {(row.actor, row.source) for row in audit} == {(ACTOR, SOURCE)}
    assert any(f"Intune device {deleted} is deleted" in row.detail for row in audit)


def test_the_configured_reason_is_the_revocation_reason(
    store: Store, sync: DeviceLifecycleSync, tenant: Tenant
) -> None:
    device = tenant.device()
    serial = _issue(store, "withdrawing", device)
    del tenant.graph.managed[device]
    sync.run_pass()
    assert _record(store, serial).revocation_reason == CRLReason.PRIVILEGE_WITHDRAWN


def test_a_disabled_device_is_held_under_ocsp_only_and_released_when_enabled(
    store: Store, sync: DeviceLifecycleSync, tenant: Tenant, cache: CountingCache
) -> None:
    held, left = tenant.device(), tenant.device()
    held_serial, left_serial = _issue(store, "holding", held), _issue(store, "revoking", left)
    tenant.graph.set_enabled(tenant.objects[held], False)
    tenant.graph.set_enabled(tenant.objects[left], False)
    before = store.holds_changed_at()

    report = sync.run_pass()

    assert (report.held, report.revoked) == (1, 0)
    record = _record(store, held_serial)
    assert record.status is CertStatus.VALID and record.device_hold_at is not None
    assert _record(store, left_serial).device_hold_at is None  # a revoke profile leaves a disabled device alone
    assert cache.invalidations == 1
    changed = store.holds_changed_at()
    assert changed is not None and changed != before

    assert sync.run_pass().held == 0  # still disabled: nothing changes
    assert cache.invalidations == 1

    tenant.graph.set_enabled(tenant.objects[held], True)
    assert sync.run_pass().released == 1
    assert _record(store, held_serial).device_hold_at is None
    assert cache.invalidations == 2
    assert store.holds_changed_at() != changed
    actions = [row.action for row in store.list_audit(limit=50)]
    assert actions.count("certificate.hold") == 1 and actions.count("certificate.release") == 1


def test_a_device_deleted_in_entra_id_loses_its_certificate_whatever_its_kind(
    store: Store, sync: DeviceLifecycleSync, tenant: Tenant
) -> None:
    joined, registered = tenant.device(), tenant.device()
    by_intune = _issue(store, "holding", joined)
    by_entra = _issue(store, "holding", tenant.entra[registered], "entra")
    sync.run_pass()  # the devices are known now: the next round learns of the deletion from the delta
    tenant.graph.delete_entra(tenant.objects[joined])
    tenant.graph.delete_entra(tenant.objects[registered])
    lookups = _lookups(tenant.graph)
    assert sync.run_pass().revoked == 2
    assert _lookups(tenant.graph) == lookups + 1  # the managed device only: Entra ID answered in the delta
    assert _record(store, by_intune).status is CertStatus.REVOKED
    assert _record(store, by_entra).status is CertStatus.REVOKED


def test_an_entra_id_certificate_is_held_and_released_by_accountenabled(
    store: Store, sync: DeviceLifecycleSync, tenant: Tenant
) -> None:
    device = tenant.device()
    serial = _issue(store, "holding", tenant.entra[device], "entra")
    tenant.graph.set_enabled(tenant.objects[device], False)
    assert sync.run_pass().held == 1
    tenant.graph.set_enabled(tenant.objects[device], True)
    assert sync.run_pass().released == 1
    assert _record(store, serial).device_hold_at is None


def test_certificates_without_a_device_or_outside_the_profiles_are_left_alone(
    store: Store, sync: DeviceLifecycleSync, tenant: Tenant, graph: FakeGraph
) -> None:
    device = tenant.device()
    without = _issue(store, "revoking", None)
    elsewhere = _issue(store, "unsynced", device)
    expired = _issue(store, "revoking", device, not_after=datetime.now(UTC) - timedelta(minutes=1))
    del graph.managed[device]
    report = sync.run_pass()
    assert report.checked == 0 and graph.calls == []  # nothing to ask Graph about
    for serial in (without, elsewhere, expired):
        assert _record(store, serial).status is CertStatus.VALID


def test_a_device_graph_does_not_answer_for_is_left_alone(
    store: Store, sync: DeviceLifecycleSync, tenant: Tenant
) -> None:
    device = tenant.device()
    serial = _issue(store, "holding", device)
    tenant.graph.set_enabled(tenant.objects[device], False)
    tenant.graph.throttle_inner[device] = deque([Refusal(500)])
    report = sync.run_pass()
    assert (report.unanswered, report.held, report.revoked) == (1, 0, 0)
    assert _record(store, serial).device_hold_at is None


def test_the_delta_link_is_kept_and_known_devices_are_not_looked_up_again(
    store: Store, graph: FakeGraph, tenant: Tenant, cache: CountingCache, sleeps: list[float]
) -> None:
    for _ in range(4):
        _issue(store, "holding", tenant.entra[tenant.device()], "entra")
    _sync(store, graph, cache, sleeps).run_pass()
    assert _lookups(graph) == 0  # the first delta round named every device
    link = store.devices.delta_link(ENTRA_DELTA_STATE)
    assert link is not None and "$deltatoken=" in link
    restarted = _sync(store, graph, cache, sleeps)
    graph.calls.clear()
    restarted.run_pass()
    assert graph.calls[0][1] == link  # the delta goes on from the kept link
    assert _lookups(graph) == 4  # nothing known after a restart: each device is looked up once
    graph.calls.clear()
    restarted.run_pass()
    assert _lookups(graph) == 0  # every device known, and the delta said nothing changed
    assert len(graph.calls) == 1
    assert store.devices.delta_link(ENTRA_DELTA_STATE) != link


def test_after_a_restart_or_another_runner_the_devices_are_looked_up_again(
    store: Store, graph: FakeGraph, tenant: Tenant, cache: CountingCache, sleeps: list[float]
) -> None:
    device = tenant.device()
    serial = _issue(store, "holding", tenant.entra[device], "entra")
    first = _sync(store, graph, cache, sleeps)
    first.run_pass()
    other = _sync(store, graph, cache, sleeps)  # another process takes the job over
    tenant.graph.set_enabled(tenant.objects[device], False)
    assert other.run_pass().held == 1
    tenant.graph.calls.clear()
    # The first process's memory predates the link the other one kept: it must not trust it.
    assert first.run_pass().released == 0
    assert _lookups(tenant.graph) == 1
    assert _record(store, serial).device_hold_at is not None


def test_a_hold_is_released_once_its_profile_is_no_longer_ocsp_only(
    store: Store, sync: DeviceLifecycleSync, graph: FakeGraph, tenant: Tenant, cache: CountingCache,
    sleeps: list[float]
) -> None:
    device = tenant.device()
    serial = _issue(store, "holding", device)
    tenant.graph.set_enabled(tenant.objects[device], False)
    sync.run_pass()
    assert _record(store, serial).device_hold_at is not None
    changed = _sync(store, graph, cache, sleeps, policies={"holding": LifecyclePolicy(DeviceLifecycle.REVOKE)})
    assert changed.run_pass().released == 1
    assert _record(store, serial).device_hold_at is None


def test_throttling_too_long_stops_the_run_and_a_later_one_goes_on(
    store: Store, graph: FakeGraph, tenant: Tenant, cache: CountingCache, sleeps: list[float]
) -> None:
    device = tenant.device()
    serial = _issue(store, "revoking", device)
    del graph.managed[device]
    clock = Clock()
    sync = _sync(store, graph, cache, sleeps, max_wait=30.0, clock=clock)
    graph.throttle_inner[device] = deque([Refusal(429, 20), Refusal(429, 20)])
    assert sync.run_safely() is None
    assert sleeps == [20]
    assert store.devices.delta_link(ENTRA_DELTA_STATE) is None  # the run did not finish: its link is not kept
    assert _record(store, serial).status is CertStatus.VALID
    clock.now += 60
    paused = sync.run_safely()
    assert paused is not None and paused.checked == 0 and sync.pass_under_way  # a failed run waits a while
    clock.now += 300
    report = sync.run_safely()
    assert report is not None and report.revoked == 1 and not sync.pass_under_way
    assert sleeps == [20]  # the one throttled request left was answered at once


def test_a_pass_starts_each_interval(
    store: Store, graph: FakeGraph, tenant: Tenant, cache: CountingCache, sleeps: list[float]
) -> None:
    _issue(store, "revoking", tenant.device())
    clock = Clock()
    sync = _sync(store, graph, cache, sleeps, clock=clock)
    assert sync.run_once().checked == 1
    clock.now += 3599
    assert sync.run_once().checked == 0  # not due yet: Graph is not asked
    clock.now += 1
    assert sync.run_once().checked == 1


def test_a_pass_longer_than_a_run_goes_on_where_it_stopped(
    store: Store, graph: FakeGraph, tenant: Tenant, cache: CountingCache, sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(device_lifecycle, "PAGE_SIZE", 2)
    serials = [_issue(store, "revoking", tenant.entra[tenant.device()], "entra") for _ in range(5)]
    for device in list(tenant.objects)[:5]:
        tenant.graph.delete_entra(tenant.objects[device])
    sync = _sync(store, graph, cache, sleeps, budget=0.0)  # each run stops after its first page
    checked = []
    while True:
        report = sync.run_once()
        checked.append(report.checked)
        if not sync.pass_under_way:
            break
    # The first delta round takes two runs (pages of 3 devices), then one page of certificates a run.
    assert checked == [0, 2, 2, 1]
    assert all(_record(store, serial).status is CertStatus.REVOKED for serial in serials)


def test_the_revocation_watch_notices_holds_made_by_another_process(
    store: Store, sync: DeviceLifecycleSync, tenant: Tenant
) -> None:
    clock = itertools.count(0.0, 10.0)
    watch = RevocationWatch(store, interval=1.0, clock=lambda: next(clock), holds=True)
    unaware = RevocationWatch(store, interval=1.0, clock=lambda: next(clock))
    device = tenant.device()
    _issue(store, "holding", device)
    generation, unaware_generation = watch.current(), unaware.current()
    tenant.graph.set_enabled(tenant.objects[device], False)
    sync.run_pass()
    assert watch.current() != generation
    assert unaware.current() == unaware_generation  # revocations alone do not tell of holds
    again = watch.current()
    assert watch.current() == again


def test_bound_certificates_come_in_pages_by_row(store: Store) -> None:
    serials = [_issue(store, "revoking", _guid()) for _ in range(5)]
    now = datetime.now(UTC)
    first = store.devices.bound_certificates(profiles=["revoking"], now=now, limit=3)
    rest = store.devices.bound_certificates(profiles=["revoking"], now=now, after_id=first[-1].row_id, limit=3)
    assert [binding.serial for binding in first + rest] == serials
    assert store.devices.bound_certificates(profiles=[], now=now) == []
    assert json.loads(json.dumps([binding.device_id for binding in rest]))  # plain strings


def test_a_pass_revokes_at_most_max_revocations_and_says_so(
    store: Store, graph: FakeGraph, cache: CountingCache, sleeps: list[float], tenant: Tenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Revocation is final: a wrong tenant or a Graph answering 404 for everything must not revoke a fleet."""
    devices = [tenant.device() for _ in range(5)]
    serials = [_issue(store, "revoking", device) for device in devices]
    for device in devices:
        del tenant.graph.managed[device]
    sync = _sync(store, graph, cache, sleeps, max_revocations=2)
    with caplog.at_level(logging.ERROR, logger="scep_server.service.device_lifecycle"):
        report = sync.run_pass()
    assert (report.checked, report.revoked, report.withheld) == (5, 2, 3)
    assert sum(_record(store, serial).status is CertStatus.REVOKED for serial in serials) == 2
    assert "device_lifecycle_max_revocations" in caplog.text
    again = sync.run_pass()  # a new pass has its own allowance: an operator who raised nothing sees it again
    assert (again.revoked, again.withheld) == (2, 1)
