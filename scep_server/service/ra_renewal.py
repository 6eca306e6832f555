"""Automatic RA renewal: a new RA before the current one enters its last ``ca.ra_renew_days`` days.

An expired RA is the classic SCEP outage: every device's envelope is refused. The renewal runs in the
background worker under the ``ra-renewal`` lock (one replica renews for all; the others pick the new RA
up from ``ra-keyring.json`` within a second, :mod:`scep_server.ca.live`), and it is the rotation
``ca rotate-ra`` does: the replaced RA keeps decrypting for ``ca.ra_grace_days``, so a device that
fetched GetCACert just before still enrolls. ``ca.ra_renew_days: 0`` turns it off.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from scep_server import metrics
from scep_server.ca.authority import rotate_ra
from scep_server.ca.live import LiveAuthority
from scep_server.config import CAConfig
from scep_server.errors import ScepServerError

log = logging.getLogger(__name__)


class RaRenewal:
    """Renews the RA of one CA directory when it is due; see the module docstring."""

    def __init__(self, authority: LiveAuthority, config: CAConfig, passphrase: bytes | None) -> None:
        """Renews the RA of the issuing generation (``authority.generations().active``)."""
        self._authority = authority
        self._config = config
        self._passphrase = passphrase

    @property
    def window(self) -> timedelta:
        return timedelta(days=self._config.ra_renew_days)

    def due(self, now: datetime | None = None) -> bool:
        """Whether the current RA is in its last ``ra_renew_days`` days (never, with 0)."""
        if self._config.ra_renew_days == 0:
            return False
        moment = now or datetime.now(UTC)
        return self._authority.current().ra_cert.not_valid_after_utc - moment <= self.window

    def renew_due(self, now: datetime | None = None) -> bool:
        """Renew the RA if it is due; whether it was renewed. A failure is logged, counted and tried
        again on the next run (the current RA keeps serving)."""
        if self._config.ra_renew_days == 0:
            return False
        self._authority.refresh()  # another replica, or ``ca rotate-ra``, may have renewed it already
        moment = now or datetime.now(UTC)
        if not self.due(moment):
            return False
        active = self._authority.generations().active
        old = active.ca
        try:
            new = rotate_ra(active.directory, old, self._config, self._passphrase, now=moment)
        except ScepServerError as exc:
            metrics.RA_RENEWALS.labels("failed").inc()
            log.error("RA renewal failed; RA %x still serves and expires %s: %s",
                      old.ra_cert.serial_number, old.ra_cert.not_valid_after_utc, exc)
            return False
        self._authority.replace_active(new)
        metrics.RA_RENEWALS.labels("renewed").inc()
        log.warning(
            "RA renewed: RA %x (valid until %s) replaces RA %x, which keeps decrypting until %s",
            new.ra_cert.serial_number, new.ra_cert.not_valid_after_utc, old.ra_cert.serial_number,
            moment + timedelta(days=self._config.ra_grace_days),
        )
        return True
