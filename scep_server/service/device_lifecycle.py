"""The device lifecycle sync: certificates follow their device's life in Intune and Entra ID (docs/device-lifecycle.md).

For every profile with ``device_lifecycle`` on, the valid certificates that name a device (``device_id``,
stored at issuance) are read in batches, and Microsoft Graph is asked about their devices
(:mod:`~scep_server.intune.graph_devices`): an Intune id through Intune's managed device (and, when Intune
knows it, the Entra ID device behind it), an Entra ID id through Entra ID alone.

* A device deleted (from Intune or from Entra ID) or retired/wiped in Intune: its certificates are
  revoked through the :class:`~scep_server.service.revocation.RevocationService` (reason
  ``device_lifecycle_reason``, cessationOfOperation by default), audited as ``graph:device-lifecycle``
  through ``device-lifecycle``; the CRL and OCSP follow.
* A device disabled in Entra ID (``accountEnabled`` false) of an ``ocsp-only`` profile: its certificates
  are held: OCSP answers them revoked (certificateHold) and the CRL does not list them; enabled again,
  they are released and OCSP answers good. A ``revoke`` profile leaves a disabled device's certificates
  alone (revocation is final; a disabled device may come back). A hold left on a profile that is no
  longer ``ocsp-only`` is released.
* A certificate without a device id, or whose device Graph did not answer for, is left alone.

Entra ID changes come from a delta query whose link is kept in ``device_sync_state`` (``entra-devices``).
Graph names a change by the device's object id, the certificate by its ``deviceId``: the sync keeps the
devices of its certificates between runs, and looks up those it does not know (after a restart, or when
another process ran the sync since: its memory then predates the kept link). One run at a time: the job
holds the ``device-lifecycle`` lock (``scep_server.jobs.tasks``).

A pass over every certificate starts each ``interval``. One run works for about ``budget`` seconds (plus
at most one batch and the throttling waits :class:`GraphDevices` allows), well within the time after
which the background worker takes a task for hung; a pass that takes longer goes on at the next run, a
minute later, from the certificate it reached (and a first delta round from the page it reached).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from scep_server.config.model import DeviceLifecycle, ProfileConfig
from scep_server.errors import IntuneError, StoreError
from scep_server.intune.graph_devices import DeltaPage, DeviceState, EntraDevice, GraphDevices, ManagedDevice
from scep_server.pki.reasons import CRLReason
from scep_server.service.revocation import RevocationCache, RevocationService
from scep_server.store import Actor, AlreadyRevoked, CertificateNotFound, Store
from scep_server.store.devices import DeviceBinding

__all__ = ["ACTOR", "ENTRA_DELTA_STATE", "SOURCE", "DeviceLifecycleSync", "LifecyclePolicy", "LifecycleReport",
           "lifecycle_policies"]

log = logging.getLogger("scep_server.service.device_lifecycle")

ACTOR = "graph:device-lifecycle"
SOURCE = "device-lifecycle"
ENTRA_DELTA_STATE = "entra-devices"
PAGE_SIZE = 500  # certificates read, and their devices asked about, per batch
DEFAULT_INTERVAL = 3600.0  # seconds from the start of one pass to the start of the next
DEFAULT_MAX_REVOCATIONS = 500  # per pass: more gone devices than this look like a mistake, not a fleet change
RUN_BUDGET = 90.0  # seconds of work per run; with Graph's throttling waits (120 s) it stays under the worker's stall
RETRY_PAUSE = 300.0  # seconds after a failed run before the pass goes on
GONE = frozenset({DeviceState.DELETED, DeviceState.RETIRED})


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """What the sync does for one profile: ``mode``, and the reason it revokes with."""

    mode: DeviceLifecycle
    reason: CRLReason = CRLReason.CESSATION_OF_OPERATION


def lifecycle_policies(profiles: Iterable[ProfileConfig]) -> dict[str, LifecyclePolicy]:
    """The policy of each profile that has the sync on."""
    return {
        profile.name: LifecyclePolicy(profile.device_lifecycle, CRLReason.from_name(profile.device_lifecycle_reason))
        for profile in profiles if profile.device_lifecycle is not DeviceLifecycle.OFF
    }


@dataclass(slots=True)
class LifecycleReport:
    """What one run did: certificates looked at, revoked, held, released, and left alone for want of an answer."""

    checked: int = 0
    revoked: int = 0
    held: int = 0
    released: int = 0
    unanswered: int = 0
    withheld: int = 0  # gone devices whose certificates were not revoked: the pass reached max_revocations


class DeviceLifecycleSync:
    """Revokes, holds and releases certificates as their devices come and go (see the module doc)."""

    def __init__(
        self, store: Store, graph: GraphDevices, revocations: RevocationService,
        policies: Mapping[str, LifecyclePolicy], *, caches: Sequence[RevocationCache] = (),
        interval: float = DEFAULT_INTERVAL, budget: float = RUN_BUDGET, max_revocations: int = DEFAULT_MAX_REVOCATIONS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC), clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``caches``: what serves OCSP answers in this process, told when holds change (revocations tell
        them themselves). ``interval``: between the starts of two passes; ``budget``: seconds of one run;
        ``max_revocations``: of one pass, beyond which it revokes nothing more (see :meth:`_revoke`)."""
        self._store = store
        self._graph = graph
        self._revocations = revocations
        self._policies = {name: policy for name, policy in policies.items() if policy.mode is not DeviceLifecycle.OFF}
        self._caches = tuple(caches)
        self._interval = interval
        self._budget = budget
        self._max_revocations = max_revocations
        self._pass_revoked = 0  # revocations of the pass under way
        self._now = now
        self._clock = clock
        self._actor = Actor(ACTOR, SOURCE)
        self._known: dict[str, EntraDevice] = {}  # Entra ID devices of our certificates, by deviceId
        self._known_link: str | None = None  # the delta link _known is up to date with
        self._cursor = 0  # the row id the pass under way has reached
        self._pass_started: float | None = None  # None: no pass under way
        self._last_pass_started: float | None = None
        self._pass_asked: set[str] = set()  # the Entra ID devices asked about in the pass under way
        self._resume_at = -math.inf  # after a failed run, the next one waits until then

    def run_safely(self) -> LifecycleReport | None:
        """One run (the job's); None when it failed or stopped (Graph unreachable, throttling too long, a
        missing permission): the pass goes on from where it was ``RETRY_PAUSE`` seconds later."""
        try:
            return self.run_once()
        except (IntuneError, StoreError) as exc:
            log.warning("device lifecycle sync stopped, will run again: %s", exc)
            return None

    @property
    def pass_under_way(self) -> bool:
        """Whether a pass stopped at the end of a run's budget and goes on at the next run."""
        return self._pass_started is not None

    def run_pass(self) -> LifecycleReport:
        """A whole pass now, whatever the schedule and the budget (an operator's or a test's run); a pass
        under way is started over. IntuneError, StoreError escape, as from :meth:`run_once`."""
        report = LifecycleReport()
        self._pass_started, self._cursor, self._pass_asked = self._clock(), 0, set()
        self._resume_at, self._pass_revoked = -math.inf, 0
        try:
            self._work(report, deadline=math.inf)
        finally:
            self._announce(report)
        return report

    def run_once(self) -> LifecycleReport:
        """Start a pass when one is due, or go on with the one under way, for about ``budget`` seconds;
        otherwise do nothing. IntuneError, StoreError escape: the pass then goes on from where it was
        ``RETRY_PAUSE`` seconds later (its certificates' delta changes are read again)."""
        report = LifecycleReport()
        started = self._clock()
        if started < self._resume_at:
            return report
        if self._pass_started is None:
            if self._last_pass_started is not None and started - self._last_pass_started < self._interval:
                return report
            self._pass_started, self._cursor, self._pass_revoked = started, 0, 0
        try:
            self._work(report, deadline=started + self._budget)
        except (IntuneError, StoreError):
            self._resume_at = self._clock() + RETRY_PAUSE
            raise
        finally:
            self._announce(report)
        return report

    def _work(self, report: LifecycleReport, *, deadline: float) -> None:
        held_profiles = [name for name, policy in self._policies.items() if policy.mode is DeviceLifecycle.OCSP_ONLY]
        report.released += self._store.devices.release_outside(held_profiles, actor=self._actor)
        now = self._now()
        page = self._page(now, self._cursor)
        if page:
            self._graph.begin_run()
            view = self._entra_view(deadline)
            while page and view.complete:
                self._settle(page, view, now, report)
                self._cursor = page[-1].row_id
                page = self._page(now, self._cursor)
                if self._clock() >= deadline:
                    break
            self._pass_asked |= view.asked
            finished = view.complete and not page
            keep = self._pass_asked if finished else self._pass_asked | set(self._known)
            self._store.devices.save_delta_link(ENTRA_DELTA_STATE, view.delta_link)
            self._known, self._known_link = view.tracked(keep), view.delta_link
            if not finished:
                log.info("device lifecycle sync: %d certificates checked; the pass goes on at the next run",
                         report.checked)
                return
        self._last_pass_started, self._pass_started, self._cursor = self._pass_started, None, 0
        self._pass_asked = set()

    def _announce(self, report: LifecycleReport) -> None:
        if report.held or report.released:
            for cache in self._caches:
                cache.invalidate()
        if report.withheld:
            log.error("device lifecycle sync: %d more certificates belong to devices that look gone, but this pass "
                      "has revoked %d already (intune.device_lifecycle_max_revocations): they are left valid. Check "
                      "the tenant and Graph's answers; raise the limit if the fleet really shrank",
                      report.withheld, self._pass_revoked)
        if report.revoked or report.held or report.released or report.unanswered or report.withheld:
            log.info("device lifecycle sync: checked=%d revoked=%d held=%d released=%d unanswered=%d withheld=%d",
                     report.checked, report.revoked, report.held, report.released, report.unanswered,
                     report.withheld)

    def _page(self, now: datetime, after_id: int) -> list[DeviceBinding]:
        return self._store.devices.bound_certificates(profiles=list(self._policies), now=now, after_id=after_id,
                                                      limit=PAGE_SIZE)

    def _entra_view(self, deadline: float) -> _EntraView:
        link = self._store.devices.delta_link(ENTRA_DELTA_STATE)
        known = self._known if link is not None and link == self._known_link else {}
        delta = self._graph.entra_delta(link, stop=lambda: self._clock() >= deadline)
        return _EntraView(self._graph, known, delta)

    def _settle(self, page: list[DeviceBinding], view: _EntraView, now: datetime, report: LifecycleReport) -> None:
        intune_ids = sorted({binding.device_id for binding in page if binding.device_id_kind == "intune"})
        managed = self._graph.managed_devices(intune_ids) if intune_ids else {}
        entra_ids = {binding.device_id for binding in page if binding.device_id_kind == "entra"}
        entra_ids |= {device.entra_device_id for device in managed.values() if device.entra_device_id}
        entra = view.states(sorted(entra_ids))
        holds: list[int] = []
        releases: list[int] = []
        for binding in page:
            report.checked += 1
            state = _state_of(binding, managed, entra)
            if state is None:
                report.unanswered += 1
            elif state in GONE and self._pass_revoked >= self._max_revocations:
                report.withheld += 1
            elif state in GONE:
                revoked = self._revoke(binding, state)
                report.revoked += revoked
                self._pass_revoked += revoked
            elif state is DeviceState.DISABLED and binding.held_since is None and self._holds(binding):
                holds.append(binding.row_id)
            elif state is DeviceState.ACTIVE and binding.held_since is not None:
                releases.append(binding.row_id)
        if holds:
            report.held += self._store.devices.hold(holds, at=now, actor=self._actor)
        if releases:
            report.released += self._store.devices.release(releases, actor=self._actor)

    def _holds(self, binding: DeviceBinding) -> bool:
        return self._policies[binding.profile].mode is DeviceLifecycle.OCSP_ONLY

    def _revoke(self, binding: DeviceBinding, state: DeviceState) -> int:
        policy = self._policies[binding.profile]
        where = "Intune" if binding.device_id_kind == "intune" else "Entra ID"
        try:
            self._revocations.revoke(
                binding.serial, reason=policy.reason, issuer=binding.issuer, actor=ACTOR, source=SOURCE,
                comment=f"{where} device {binding.device_id} is {state.value}",
            )
        except (AlreadyRevoked, CertificateNotFound):
            return 0  # revoked (or gone) meanwhile
        log.info("revoked serial=%x: its %s device %s is %s", binding.serial, where, binding.device_id, state.value)
        return 1


def _state_of(
    binding: DeviceBinding, managed: Mapping[str, ManagedDevice], entra: Mapping[str, EntraDevice | None]
) -> DeviceState | None:
    """The state of the certificate's device, or None when Graph did not say."""
    entra_id = binding.device_id
    if binding.device_id_kind == "intune":
        device = managed.get(binding.device_id)
        if device is None:
            return None
        if device.state in GONE or device.entra_device_id is None:
            return device.state
        entra_id = device.entra_device_id
    if entra_id not in entra:
        return None
    found = entra[entra_id]
    if found is None:
        return DeviceState.DELETED
    return DeviceState.DISABLED if found.enabled is False else DeviceState.ACTIVE


class _EntraView:
    """The Entra ID devices as of this run: those known from earlier runs, moved on by the delta, and
    those looked up now (None: Entra ID has no such device)."""

    def __init__(self, graph: GraphDevices, known: Mapping[str, EntraDevice], delta: DeltaPage) -> None:
        self._graph = graph
        self.delta_link = delta.delta_link
        self.complete = delta.complete  # false: a first delta round stopped early; no certificate is judged
        self._current: dict[str, EntraDevice | None] = dict(known)
        by_object = {device.object_id: device for device in known.values()}
        for change in delta.changed:
            device = _merged(change, by_object.get(change.object_id))
            if device.device_id is not None:
                self._current[device.device_id] = by_object[device.object_id] = device
        for object_id in delta.removed:
            removed = by_object.get(object_id)
            if removed is not None and removed.device_id is not None:
                self._current[removed.device_id] = None
        self.asked: set[str] = set()

    def states(self, device_ids: Sequence[str]) -> dict[str, EntraDevice | None]:
        """Each of ``device_ids`` Graph has answered for, looking up those not seen yet."""
        self.asked.update(device_ids)
        unseen = [device_id for device_id in device_ids if device_id not in self._current]
        if unseen:
            self._current.update(self._graph.entra_devices(unseen))
        return {device_id: self._current[device_id] for device_id in device_ids if device_id in self._current}

    def tracked(self, keep: Iterable[str]) -> dict[str, EntraDevice]:
        """What the next run needs to know: the devices of ``keep`` (and of this run's certificates), or,
        while a delta round is not complete, everything it has reported so far."""
        wanted = set(self._current) if not self.complete else {*keep, *self.asked}
        return {device_id: device for device_id in wanted if (device := self._current.get(device_id)) is not None}


def _merged(change: EntraDevice, previous: EntraDevice | None) -> EntraDevice:
    """A delta entry completed with what was known: Graph may send only the properties that changed."""
    if previous is None:
        return change
    return EntraDevice(change.object_id, change.device_id or previous.device_id,
                       change.enabled if change.enabled is not None else previous.enabled)
