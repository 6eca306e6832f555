"""The revocation poll before a reissue: one Intune revocation round before certifying a subject or device anew.

When an Intune profile changes, Intune queues the revocation of the device's certificate and has the device
enroll again, often within seconds: answered before the next scheduled revocation round, the device would
hold the new certificate and, briefly, the old one too, and a revocation meant for the old one could race
the issuance. So when a PKCSReq of an Intune-validated profile arrives for a subject, or a device id, that
still holds a valid certificate, one revocation round (download → revoke → upload) runs first, and the
request waits for it at most ``intune.revocation_poll_before_reissue_seconds``. A round that is slow, or
fails, never fails the enrollment: it is logged, and issuance goes on.

Requests that arrive together share one round: each waits for a round that started after it arrived,
and a round runs only when no other one does, in any process (the round lock).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Protocol

from cryptography import x509

from scep_server.ca.device_ids import device_id_of
from scep_server.config.model import DeviceIdConfig

__all__ = ["ReissuePoll", "SharedRounds", "ValidCertificates"]

log = logging.getLogger("scep_server.service.reissue_poll")


class ValidCertificates(Protocol):
    def holds_valid_certificate(self, *, subject: str | None, device_id: str | None, now: datetime) -> bool: ...


class SharedRounds:
    """Runs ``run`` in a thread of its own, one at a time; callers wait for a run that starts after them."""

    def __init__(self, run: Callable[[], object]) -> None:
        self._run = run
        self._changed = threading.Condition()
        self._started = 0
        self._finished = 0
        self._wanted = 0
        self._running = False

    def fresh_round(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a run that starts after this call; whether it ended in time."""
        with self._changed:
            target = self._started + 1
            self._wanted = max(self._wanted, target)
            if not self._running:
                self._running = True
                threading.Thread(target=self._loop, name="scep-reissue-revocations", daemon=True).start()
            return self._changed.wait_for(lambda: self._finished >= target, timeout)

    def _loop(self) -> None:
        while True:
            with self._changed:
                if self._started >= self._wanted:
                    self._running = False
                    return
                self._started += 1
                number = self._started
            try:
                self._run()
            except Exception:  # a round that raises must not leave its waiters, or later rounds, stuck
                log.exception("the Intune revocation round before a reissue failed")
            finally:
                with self._changed:
                    self._finished = number
                    self._changed.notify_all()


class ReissuePoll:
    """Decides whether a PKCSReq waits for a revocation round first, and waits (see the module doc)."""

    def __init__(
        self, certificates: ValidCertificates, rounds: SharedRounds, *, wait: float,
        profiles: Collection[str], device_ids: Mapping[str, DeviceIdConfig],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``certificates``: the store's (``Store.devices``). ``profiles``: those whose requests Intune
        validates; ``device_ids``: how each profile's certificates name their device."""
        self._certificates = certificates
        self._rounds = rounds
        self._wait = wait
        self._profiles = frozenset(profiles)
        self._device_ids = dict(device_ids)
        self._now = now

    def before_issuing(self, profile: str, csr: x509.CertificateSigningRequest) -> bool:
        """Run one revocation round first if ``csr`` is for a subject or device that holds a valid
        certificate; whether a round ended in time. Never raises: a failure is logged and issuance goes on."""
        if self._wait <= 0 or profile not in self._profiles:
            return False
        try:
            if not self._reissues(profile, csr):
                return False
            if self._rounds.fresh_round(self._wait):
                return True
            log.warning("profile=%s: the Intune revocation round before this reissue took longer than %g s; "
                        "issuing without waiting for it", profile, self._wait)
        except Exception as exc:  # noqa: BLE001 - the poll only narrows a race, it must never fail an enrollment
            log.warning("profile=%s: the revocation poll before a reissue failed (%s: %s); issuing anyway",
                        profile, type(exc).__name__, exc)
        return False

    def _reissues(self, profile: str, csr: x509.CertificateSigningRequest) -> bool:
        subject = csr.subject.rfc4514_string() if csr.subject.rdns else None
        config = self._device_ids.get(profile)
        device = device_id_of(csr, config, warn=False) if config is not None else None
        if subject is None and device is None:
            return False
        return self._certificates.holds_valid_certificate(subject=subject, device_id=device.value if device else None,
                                                         now=self._now())
