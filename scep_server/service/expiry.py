"""The expiry radar: when each credential the server depends on runs out, as a gauge, a log line and in /readyz.

Credentials: the issuing CA's certificate, its current RA certificate (the one a rotation or the
renewal job put in place), its delegated OCSP responder certificate (the file in the issuing
generation's directory, which the renewal task replaces), and the Entra ID app's credential: the client
certificate file's notAfter, or the client secret's endDateTime as Graph lists it (see
:mod:`scep_server.intune.credentials`).
Each known expiry is exported as ``scep_credential_not_after_seconds{credential}``. Under 30, 14, 7 and
1 days left a WARNING names the credential and the tightest threshold crossed, once per threshold per
process per day (an ERROR once a day after it has expired), however often the radar is surveyed.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from scep_server import metrics
from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.certfiles import load_single_certificate
from scep_server.ca.live import LiveAuthority
from scep_server.ca.responder import OCSP_CERT, RENEW_WHEN_LEFT
from scep_server.config.model import IntuneConfig
from scep_server.errors import ScepServerError
from scep_server.intune.check import CheckResult
from scep_server.intune.credentials import app_credential_kind
from scep_server.intune.health import AppHealth

__all__ = ["CREDENTIALS", "REMOTE_CREDENTIALS", "WARNING_DAYS", "CertificateFile", "CredentialExpiry",
           "ExpiryRadar", "ExpiryWarnings", "ResponderFile", "server_credentials"]

log = logging.getLogger(__name__)

CREDENTIALS = ("ca", "ra", "ocsp", "client_certificate", "client_secret")
REMOTE_CREDENTIALS = frozenset({"client_secret"})  # read through Graph
WARNING_DAYS = (30, 14, 7, 1)
SECONDS_PER_DAY = 86400.0
# Reads a credential's notAfter; raises ScepServerError saying why it cannot be known.
Source = Callable[[], datetime]
WallClock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CredentialExpiry:
    """One credential's notAfter and what is left of it at the survey, or why its expiry is unknown."""

    credential: str
    not_after: datetime | None
    seconds_left: float | None
    problem: str | None = None

    @property
    def days_left(self) -> float | None:
        return None if self.seconds_left is None else self.seconds_left / SECONDS_PER_DAY

    @property
    def expired(self) -> bool:
        return self.seconds_left is not None and self.seconds_left <= 0

    def check(self) -> CheckResult:
        """For /readyz: fails only once expired (an unknown expiry is reported, not failed)."""
        name = f"expiry:{self.credential}"
        if self.not_after is None or self.days_left is None:
            return CheckResult(name, True, f"expiry unknown: {self.problem}")
        until = f"{self.not_after:%Y-%m-%dT%H:%M:%SZ}"
        if self.expired:
            return CheckResult(name, False, f"expired {abs(self.days_left):.1f} days ago ({until})")
        return CheckResult(name, True, f"{self.days_left:.1f} days left (until {until})")

    def to_json(self) -> dict[str, object]:
        return {"notAfter": None if self.not_after is None else f"{self.not_after:%Y-%m-%dT%H:%M:%SZ}",
                "daysLeft": None if self.days_left is None else round(self.days_left, 2),
                "problem": self.problem}


def renewed_thresholds(lifetime_days: float, renew_when_left: float = RENEW_WHEN_LEFT) -> tuple[int, ...]:
    """The warning days for a credential the server renews itself (the OCSP responder's) once
    ``renew_when_left`` of its ``lifetime_days`` is left: only those past its renewal point, so that a
    healthy one, which always has less than 30 days, is never warned about; one is, once renewal fails."""
    renewal_point = lifetime_days * renew_when_left
    return tuple(days for days in WARNING_DAYS if days < renewal_point) or (min(WARNING_DAYS),)


class ExpiryWarnings:
    """Logs a credential's tightest crossed threshold at most once per threshold per day (see the module doc).

    ``per_credential`` gives some credentials thresholds of their own (:func:`renewed_thresholds`)."""

    def __init__(
        self, thresholds: tuple[int, ...] = WARNING_DAYS, logger: logging.Logger = log,
        per_credential: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        self._thresholds = tuple(sorted(thresholds))
        self._per_credential = {name: tuple(sorted(days)) for name, days in (per_credential or {}).items()}
        self._log = logger
        self._day: date | None = None
        self._said: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def note(self, expiry: CredentialExpiry, now: datetime) -> None:
        days = expiry.days_left
        if days is None or expiry.not_after is None:
            return
        thresholds = self._per_credential.get(expiry.credential, self._thresholds)
        threshold = 0 if expiry.expired else next((t for t in thresholds if days <= t), None)
        if threshold is None or not self._first_today(expiry.credential, threshold, now.date()):
            return
        until = f"{expiry.not_after:%Y-%m-%d %H:%M} UTC"
        if threshold == 0:
            self._log.error("credential %s EXPIRED on %s: renew it now", expiry.credential, until)
        else:
            self._log.warning("credential %s expires on %s: %.1f days left (under %d days): renew it",
                              expiry.credential, until, days, threshold)

    def _first_today(self, credential: str, threshold: int, today: date) -> bool:
        with self._lock:
            if today != self._day:
                self._day, self._said = today, set()
            if (credential, threshold) in self._said:
                return False
            self._said.add((credential, threshold))
            return True


class ExpiryRadar:
    """Surveys named credential sources: the gauge, the warnings, and the expiries for /readyz.

    ``survey`` is cheap (sources cache what they read) and safe to call from any thread, as often as
    probes and the background task call it.
    """

    def __init__(self, sources: Mapping[str, Source], *, now: WallClock = utcnow,
                 warnings: ExpiryWarnings | None = None) -> None:
        self._sources = dict(sources)
        self._now = now
        self._warnings = warnings if warnings is not None else ExpiryWarnings()

    @property
    def credentials(self) -> tuple[str, ...]:
        return tuple(self._sources)

    def survey(self, *, local_only: bool = False) -> tuple[CredentialExpiry, ...]:
        """Read every source (``local_only``: not those that ask Graph), export and log what is found."""
        now = self._now()
        sources = {name: source for name, source in self._sources.items()
                   if not (local_only and name in REMOTE_CREDENTIALS)}
        expiries = tuple(self._read(name, source, now) for name, source in sources.items())
        for expiry in expiries:
            if expiry.not_after is not None:
                metrics.CREDENTIAL_NOT_AFTER.labels(expiry.credential).set(expiry.not_after.timestamp())
            self._warnings.note(expiry, now)
        return expiries

    @staticmethod
    def _read(name: str, source: Source, now: datetime) -> CredentialExpiry:
        try:
            not_after = source()
        except ScepServerError as exc:
            return CredentialExpiry(name, None, None, str(exc))
        return CredentialExpiry(name, not_after, (not_after - now).total_seconds())


class CertificateFile:
    """notAfter of the one certificate in a PEM file, read again only when the file changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._seen: tuple[tuple[int, int, int], datetime] | None = None
        self._lock = threading.Lock()

    def not_after(self) -> datetime:
        """Raises ScepServerError (CAError) when the file is missing or not one certificate."""
        with self._lock:
            stamp = self._stamp()
            if self._seen is None or self._seen[0] != stamp:
                self._seen = (stamp, load_single_certificate(self._path).not_valid_after_utc)
            return self._seen[1]

    def _stamp(self) -> tuple[int, int, int]:
        try:
            status = os.stat(self._path)
        except OSError:
            return (0, 0, 0)  # load_single_certificate says what is wrong
        return (status.st_mtime_ns, status.st_size, status.st_ino)


class ResponderFile:
    """notAfter of the issuing generation's OCSP responder certificate: after an activation, the file in
    the new generation's directory. Each file is read again only when it changes (:class:`CertificateFile`)."""

    def __init__(self, authority: LiveAuthority) -> None:
        self._authority = authority
        self._files: dict[Path, CertificateFile] = {}  # one per generation that has issued in this process
        self._lock = threading.Lock()

    def not_after(self) -> datetime:
        path = self._authority.generations().active.directory / OCSP_CERT
        with self._lock:
            watched = self._files.get(path)
            if watched is None:
                watched = self._files[path] = CertificateFile(path)
        return watched.not_after()


def server_credentials(
    ca: CertificateAuthority | LiveAuthority, ca_dir: Path, intune: IntuneConfig, app: AppHealth | None
) -> dict[str, Source]:
    """The sources of this server's credentials: the app's only when it authenticates to Entra ID. The
    CA's, the RA's and the OCSP responder's are the issuing generation's, whichever rotation (``ca
    rotate-ra``, the renewal job) or activation put them there; ``ca_dir``: where a plain ``ca`` is."""
    authority = ca if isinstance(ca, LiveAuthority) else LiveAuthority.fixed(ca, ca_dir)
    sources: dict[str, Source] = {
        "ca": lambda: authority.current().ca_cert.not_valid_after_utc,
        "ra": lambda: authority.current().ra_cert.not_valid_after_utc,
        "ocsp": ResponderFile(authority).not_after,
    }
    credential = app_credential_kind(intune)
    if credential is not None and credential.path is not None:
        sources["client_certificate"] = CertificateFile(Path(credential.path)).not_after
    elif credential is not None and app is not None:
        sources["client_secret"] = app.secret_not_after
    return sources
