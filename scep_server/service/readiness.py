"""Readiness: whether this process can do its work now, check by check, for ``/readyz``.

==================  ====================================================================================
``store``           the database answers a trivial query
``ca_keys``         the CA key signs, the RA key signs and decrypts (a round trip through the key backend)
``intune_auth``     (only when a profile validates with Intune) Entra ID issued the app an Intune token
                    carrying ``scep_challenge_provider``: asked in the background at most every 30 s
                    (5 s while failing), the last answer reported (:mod:`scep_server.intune.health`)
``crl``             the CRL served now has its nextUpdate in the future
``expiry:<name>``   each credential of the expiry radar: fails only once expired
==================  ====================================================================================

The report is ready when every check passes. A report is kept for ``REPORT_TTL`` seconds so that a
burst of probes costs one round of checks. A check that raises is reported failed, never a 500.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.keys import Signer
from scep_server.ca.live import LiveAuthority, as_live
from scep_server.challenge import needs_intune
from scep_server.config import ServerConfig
from scep_server.errors import CAError
from scep_server.intune.check import CheckResult
from scep_server.intune.health import AppHealth
from scep_server.service.expiry import (
    CredentialExpiry,
    ExpiryRadar,
    ExpiryWarnings,
    renewed_thresholds,
    server_credentials,
)
from scep_server.service.publishing import CrlSource
from scep_server.store import Store

__all__ = ["CheckResult", "CrlDates", "Readiness", "ReadinessReport", "check_crl", "check_keys"]

log = logging.getLogger(__name__)

REPORT_TTL = 1.0
Probe = Callable[[], CheckResult]


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """Every check's result and the radar's credentials; ready when every check passed."""

    checks: tuple[CheckResult, ...]
    credentials: tuple[CredentialExpiry, ...] = ()

    @property
    def ready(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "checks": [check.to_json() for check in self.checks],
                "credentials": {expiry.credential: expiry.to_json() for expiry in self.credentials}}


class Readiness:
    """The checks of one process (see the module doc); :meth:`report` is thread-safe."""

    def __init__(
        self, probes: dict[str, Probe], radar: ExpiryRadar, *, app: AppHealth | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probes = probes
        self._radar = radar
        self._app = app
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, ReadinessReport] | None = None

    @classmethod
    def of_server(
        cls, config: ServerConfig, ca: CertificateAuthority | LiveAuthority, store: Store, crls: CrlSource,
        *, app: AppHealth | None = None,
    ) -> Readiness:
        """The checks of a serving process; ``app`` is built when a profile validates with Intune. The
        keys probed and the RA whose expiry is watched are the current ones (``ca`` follows rotations)."""
        authority = as_live(ca)
        if app is None and any(needs_intune(profile.challenge) for profile in config.profiles):
            app = AppHealth(config.intune)
        probes: dict[str, Probe] = {
            "store": lambda: _check_store(store), "ca_keys": lambda: check_keys(authority.current()),
        }
        if app is not None:
            probes["intune_auth"] = app.auth
        crl_dates = CrlDates()
        probes["crl"] = lambda: check_crl(crls.current_der(), crl_dates)
        # The OCSP responder renews itself: it is warned about only once that renewal is overdue.
        warnings = ExpiryWarnings(per_credential={"ocsp": renewed_thresholds(config.ca.ocsp_validity_days)})
        radar = ExpiryRadar(server_credentials(authority, config.ca_dir, config.intune, app), warnings=warnings)
        return cls(probes, radar, app=app)

    @property
    def radar(self) -> ExpiryRadar:
        return self._radar

    def report(self) -> ReadinessReport:
        with self._lock:
            if self._last is not None and self._clock() - self._last[0] < REPORT_TTL:
                return self._last[1]
            report = self._fresh_report()
            self._last = (self._clock(), report)
            return report

    def close(self) -> None:
        if self._app is not None:
            self._app.close()

    def _fresh_report(self) -> ReadinessReport:
        checks = [_guarded(name, probe) for name, probe in self._probes.items()]
        try:
            credentials = self._radar.survey()
        except Exception:  # noqa: BLE001 - the same rule as the checks: a probe never answers 500
            log.exception("readiness: the expiry radar failed")
            credentials = ()
        checks += [expiry.check() for expiry in credentials]
        return ReadinessReport(tuple(checks), credentials)


def _guarded(name: str, probe: Probe) -> CheckResult:
    # Any exception: a readiness probe must say which check broke, never answer 500.
    try:
        return probe()
    except Exception as exc:  # noqa: BLE001
        log.warning("readiness check %s failed: %s", name, exc, exc_info=not isinstance(exc, OSError))
        return CheckResult(name, False, f"{type(exc).__name__}: {exc}")


def _check_store(store: Store) -> CheckResult:
    if store.ping():
        return CheckResult("store", True, "the database answers")
    return CheckResult("store", False, "the database does not answer (see the log)")


# --- the CA's keys ------------------------------------------------------------------------------------


def check_keys(ca: CertificateAuthority) -> CheckResult:
    """Sign with the CA and RA keys and verify with their certificates; decrypt with the RA key."""
    problems = [problem for problem in (_signs(ca.ca_key, ca.ca_cert, "CA"), _signs(ca.ra_key, ca.ra_cert, "RA"),
                                        _decrypts(ca)) if problem]
    if problems:
        return CheckResult("ca_keys", False, "; ".join(problems))
    return CheckResult("ca_keys", True, "the CA key signs; the RA key signs and decrypts")


def _signs(key: Signer, certificate: x509.Certificate, role: str) -> str | None:
    data = os.urandom(32)
    public_key = certificate.public_key()
    try:
        signature = key.sign(data)
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, PKCS1v15(), key.signature_hash)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(key.signature_hash))
        else:
            return f"the {role} certificate's key is neither RSA nor EC"
    except InvalidSignature:
        return f"the {role} key's signature does not verify with the {role} certificate"
    except (ValueError, TypeError, CAError) as exc:
        return f"the {role} key cannot sign: {exc}"
    return None


def _decrypts(ca: CertificateAuthority) -> str | None:
    data = os.urandom(32)
    public_key = ca.ra_cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        return "the RA certificate's key is not RSA"
    try:
        decrypted = ca.ra_key.decrypt(public_key.encrypt(data, PKCS1v15()), PKCS1v15())
    except (ValueError, TypeError, CAError) as exc:
        return f"the RA key cannot decrypt: {exc}"
    return None if decrypted == data else "the RA key decrypts to something else than was encrypted"


# --- the CRL ------------------------------------------------------------------------------------------


class CrlDates:
    """nextUpdate of the CRL bytes last seen: the DER is parsed again only when it changes."""

    def __init__(self) -> None:
        self._der: bytes | None = None
        self._next_update: datetime | None = None
        self._lock = threading.Lock()

    def next_update(self, der: bytes) -> datetime | None:
        with self._lock:
            if der is not self._der and der != self._der:
                self._next_update = x509.load_der_x509_crl(der).next_update_utc
                self._der = der
            return self._next_update


def check_crl(der: bytes, dates: CrlDates, now: datetime | None = None) -> CheckResult:
    """The CRL served now (``CrlCache.current_der``: built if due, as for a client) must not be stale."""
    next_update = dates.next_update(der)
    now = now or datetime.now(UTC)
    if next_update is None:
        return CheckResult("crl", False, "the CRL has no nextUpdate")
    left = (next_update - now).total_seconds()
    if left <= 0:
        return CheckResult("crl", False, f"the CRL is stale: its nextUpdate {next_update:%Y-%m-%dT%H:%M:%SZ} "
                                         "has passed (is the publisher running?)")
    return CheckResult("crl", True, f"nextUpdate {next_update:%Y-%m-%dT%H:%M:%SZ} ({left / 3600:.1f} h from now)")
