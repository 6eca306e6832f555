"""The background tasks, as named units: what each runs, how often, and whether a lock elects its runner.

Singletons (``lock`` set: exactly one process of all that share the store runs them, see locks.py):

* ``crl-publishing``: builds and stores the CRL every process serves; one builder keeps thisUpdate and
  CRLNumber the same for every client, whichever replica answers.
* ``ocsp-responder-renewal``: renews the delegated OCSP responder certificate ahead of the requests
  that would otherwise renew it; the files are shared, so one renewal serves every process.
* ``ra-renewal``: a new RA when the current one enters its last ``ca.ra_renew_days`` (service/ra_renewal.py);
  the keyring is one set of files, so one replica renews and every process follows ``ra-keyring.json``.
* ``intune-revocation-sync``: downloads Intune's revocation requests and uploads the results. Intune
  hands the same requests to every caller until it has results, so two runners would process and
  report them twice. Each round also takes the round lock, which the CLI command takes too.
* ``device-lifecycle``: asks Graph about the devices behind valid certificates and revokes, holds or
  releases them (service/device_lifecycle.py); one runner keeps one delta link and revokes once.

Claimed row by row (``lock`` None: every process runs them; a conditional update hands each row to
one of them, and a runner that dies leaves its rows to the others when its lease runs out):

* ``intune-outbox``: each notification is leased (``outbox_lease``) before it is sent.
* ``deferred-validations``: each transaction's retry is leased (``lease_deferred``).
* ``undelivered-certificates``: the 24 h sweep; each transaction is failed, and its certificate revoked,
  in one conditional update on the locked row (``abandon_transaction``), so it is withdrawn only once.

Per process (no lock, nothing shared): ``credential-expiry``, the expiry radar's hourly look, whose
warnings and gauge are each process's own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from scep_server import logs
from scep_server.errors import ScepServerError
from scep_server.jobs.locks import CRL_PUBLISHING, INTUNE_REVOCATION_SYNC, OCSP_RESPONDER_RENEWAL, RA_RENEWAL, Lock
from scep_server.jobs.worker import Task
from scep_server.service.intune_sync import RevocationSync, SyncReport
from scep_server.service.issuance import IssuanceService
from scep_server.service.profile import Profile
from scep_server.store import Store

log = logging.getLogger(__name__)

# Longer than the slowest validation can take (every retry timing out) so a lease does not run out mid-way.
LEASE = timedelta(minutes=10)
OCSP_RENEWAL_CHECK_SECONDS = 60.0
UNDELIVERED_SWEEP_SECONDS = 300.0
CREDENTIAL_EXPIRY_SECONDS = 3600.0
RA_RENEWAL_CHECK_SECONDS = 600.0
DEVICE_LIFECYCLE = "device-lifecycle"  # the lock electing the device lifecycle sync's one runner
DEVICE_LIFECYCLE_TICK_SECONDS = 60.0


def crl_publishing(publish_due: Callable[[], bool]) -> Task:
    return Task("crl-publishing", publish_due, lock=CRL_PUBLISHING)


def ocsp_responder_renewal(current: Callable[[], object]) -> Task:
    """``current`` is the responder's identity getter, which renews the certificate when it is due."""
    return Task("ocsp-responder-renewal", current, lock=OCSP_RESPONDER_RENEWAL, every=OCSP_RENEWAL_CHECK_SECONDS)


def ra_renewal(renew_due: Callable[[], bool]) -> Task:
    return Task("ra-renewal", renew_due, lock=RA_RENEWAL, every=RA_RENEWAL_CHECK_SECONDS)


def intune_revocation_sync(rounds: RevocationRounds, every: float) -> Task:
    return Task("intune-revocation-sync", rounds.run_safely, lock=INTUNE_REVOCATION_SYNC, every=every)


def device_lifecycle(run: Callable[[], object]) -> Task:
    """The device lifecycle sync (``run``: ``DeviceLifecycleSync.run_safely``), tried every minute: the sync
    starts a pass each ``intune.device_lifecycle_interval_seconds`` and goes on with one that a run's time
    budget cut short."""
    return Task("device-lifecycle", run, lock=DEVICE_LIFECYCLE, every=DEVICE_LIFECYCLE_TICK_SECONDS)


def intune_outbox(deliver_due: Callable[[], int]) -> Task:
    return Task("intune-outbox", deliver_due)


def deferred_validations(deferred: DeferredValidations) -> Task:
    return Task("deferred-validations", deferred.run_once)


def undelivered_certificates(withdraw_abandoned: Callable[[], int]) -> Task:
    return Task("undelivered-certificates", withdraw_abandoned, every=UNDELIVERED_SWEEP_SECONDS)


class RevocationRounds:
    """Intune revocation rounds, one at a time across processes: each holds the round lock while it runs.

    The server's elected worker and ``scep-server intune sync-revocations`` both go through here, so a
    request is never processed (or its result uploaded) by two of them at once.
    """

    def __init__(self, sync: RevocationSync, lock: Lock) -> None:
        self._sync = sync
        self._lock = lock

    def run_safely(self) -> SyncReport | None:
        """One round; None when another is running or it failed (it is tried again later)."""
        if not self._lock.try_acquire():
            log.debug("Intune revocation round skipped: another one is running")
            return None
        try:
            return self._sync.run_safely()
        finally:
            self._lock.release()

    def run_when_free(self, timeout: float, *, pause: float = 0.1) -> SyncReport | None:
        """One round as soon as no other one runs, waiting up to ``timeout`` seconds for that (the revocation
        poll before a reissue, service/reissue_poll.py); None when it stayed taken or the round failed."""
        deadline = time.monotonic() + timeout
        while not self._lock.try_acquire():
            if time.monotonic() >= deadline:
                log.info("Intune revocation round not run: another one kept running for %g s", timeout)
                return None
            time.sleep(pause)
        try:
            return self._sync.run_safely()
        finally:
            self._lock.release()


class DeferredValidations:
    """Retries validations that Intune could not answer when the request came in."""

    def __init__(self, store: Store, issuance: IssuanceService, profiles: Mapping[str, Profile]) -> None:
        self._store = store
        self._issuance = issuance
        self._profiles = profiles

    def run_once(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        done = 0
        for record in self._store.due_deferred(now=now):
            profile = self._profiles.get(record.profile)
            if profile is None or record.next_attempt_at is None:
                continue
            if not self._store.lease_deferred(
                profile=record.profile, transaction_id=record.transaction_id,
                expected_next_attempt_at=record.next_attempt_at, lease_until=datetime.now(UTC) + LEASE,
            ):
                continue
            try:
                with logs.log_context(profile=record.profile, transaction_id=record.transaction_id):
                    self._issuance.retry_deferred(profile, record, now)
            except ScepServerError as exc:
                log.info("deferred transaction=%s ended: %s", record.transaction_id, exc)
            done += 1
        return done


def credential_expiry(survey: Callable[[], object]) -> Task:
    """The expiry radar's hourly look (service/expiry.py). No lock: each process logs its own warnings."""
    return Task("credential-expiry", survey, every=CREDENTIAL_EXPIRY_SECONDS)
