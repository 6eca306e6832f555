"""Automatic RA renewal: a new RA before the current one enters its last ``ca.ra_renew_days`` days.

An expired RA is the classic SCEP outage: every device's envelope is refused. The renewal runs in the
background worker under the ``ra-renewal`` lock (one replica renews for all; the others pick the new RA
up from ``ra-keyring.json`` within a second, :mod:`scep_server.ca.live`), and it is the rotation
``ca rotate-ra`` does: the replaced RA keeps decrypting for ``ca.ra_grace_days``, so a device that
fetched GetCACert just before still enrolls. ``ca.ra_renew_days: 0`` turns it off. Each run also
destroys the replaced RAs whose grace period is over, in every CA generation.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from scep_server import metrics
from scep_server.ca.authority import CertificateAuthority, generation_namespace, key_backend, rotate_ra
from scep_server.ca.live import LiveAuthority
from scep_server.ca.ra_keyring import prune_ra_keyring
from scep_server.config import CAConfig
from scep_server.errors import ScepServerError, StoreError
from scep_server.store import AuditAction, AuditEntry, Store
from scep_server.store.audit_chain import BACKGROUND

log = logging.getLogger(__name__)

RENEWAL_GAIN = timedelta(days=1)  # a renewal must push the RA's end at least this far


class RaRenewal:
    """Renews the RA of one CA directory when it is due; see the module docstring."""

    def __init__(
        self, authority: LiveAuthority, config: CAConfig, passphrase: bytes | None, *, store: Store | None = None
    ) -> None:
        """Renews the RA of the issuing generation (``authority.generations().active``), and appends each
        renewal to ``store``'s audit log."""
        self._authority = authority
        self._config = config
        self._passphrase = passphrase
        self._store = store

    @property
    def window(self) -> timedelta:
        return timedelta(days=self._config.ra_renew_days)

    def due(self, now: datetime | None = None) -> bool:
        """Whether the current RA is in its last ``ra_renew_days`` days (never, with 0) and a new one
        would last longer: an RA never outlives its CA, so near the CA's end a renewal would only make
        the same RA again (the expiry radar warns of the CA then)."""
        if self._config.ra_renew_days == 0:
            return False
        moment = now or datetime.now(UTC)
        ca = self._authority.current()
        ra_end = ca.ra_cert.not_valid_after_utc
        would_end = min(moment + timedelta(days=self._config.ra_validity_days), ca.ca_cert.not_valid_after_utc)
        return ra_end - moment <= self.window and would_end - ra_end > RENEWAL_GAIN

    def renew_due(self, now: datetime | None = None) -> bool:
        """Drop the RAs whose grace period is over, then renew the RA if it is due; whether it was
        renewed. A failure is logged, counted and tried again on the next run (the current RA keeps
        serving)."""
        moment = now or datetime.now(UTC)
        self._prune(moment)
        if self._config.ra_renew_days == 0:
            return False
        self._authority.refresh()  # another replica, or ``ca rotate-ra``, may have renewed it already
        if not self.due(moment):
            return False
        active = self._authority.generations().active
        old = active.ca
        try:
            new = rotate_ra(active.directory, old, self._config, self._passphrase, now=moment)
        except (ScepServerError, ValueError) as exc:  # ValueError: a certificate that cannot be built
            metrics.RA_RENEWALS.labels("failed").inc()
            log.error("RA renewal failed; RA %x still serves and expires %s: %s",
                      old.ra_cert.serial_number, old.ra_cert.not_valid_after_utc, exc)
            return False
        self._authority.replace_active(new)
        metrics.RA_RENEWALS.labels("renewed").inc()
        self._audit(active.label, new, old)
        log.warning(
            "RA renewed: RA %x (valid until %s) replaces RA %x, which keeps decrypting until %s",
            new.ra_cert.serial_number, new.ra_cert.not_valid_after_utc, old.ra_cert.serial_number,
            moment + timedelta(days=self._config.ra_grace_days),
        )
        return True

    def _audit(self, label: str, new: CertificateAuthority, old: CertificateAuthority) -> None:
        if self._store is None:
            return
        entry = AuditEntry(BACKGROUND, AuditAction.CA_ROTATE_RA.value, f"ca={self._config.name} generation={label}", {
            "ra_serial": f"{new.ra_cert.serial_number:x}", "not_after": new.ra_cert.not_valid_after_utc.isoformat(),
            "previous_ra_serial": f"{old.ra_cert.serial_number:x}",
        })
        try:
            self._store.append_audit(entry)
        except StoreError as exc:  # the renewal stands: the log says what the audit log could not
            log.error("RA renewal of generation %s not written to the audit log: %s", label, exc)

    def _prune(self, now: datetime) -> None:
        """Destroy the replaced RAs of every generation whose grace period is over."""
        for generation in self._authority.generations().all():
            keys = key_backend(generation.directory, self._passphrase, self._config.keys,
                               namespace=generation_namespace(generation.ca.label))
            try:
                pruned = prune_ra_keyring(generation.directory, keys, now)
            except ScepServerError as exc:
                log.error("the replaced RAs of generation %s could not be removed: %s", generation.label, exc)
                continue
            if pruned:
                log.info("%d replaced RA(s) of generation %s removed after their grace period",
                         pruned, generation.label)
