"""Publishing revocation status: the CA's CRL and its OCSP answers, never stale after a revocation.

The CRL is shared: one process builds it on schedule and every process serves the newest one stored
(:class:`CrlCache`). OCSP responses are signed and cached per process. What makes either stale is a
revocation, made in this process or in another one (a CLI command, another gunicorn worker, another
replica), so both depend on a :class:`RevocationWatch`: its generation changes when this process
reports a revocation (:meth:`RevocationWatch.notify`, called by ``invalidate``) and when the number of
revoked certificates in the store has changed since it last looked (at most once per ``interval``, one
cheap count). An OCSP response built under an older generation, or a CRL covering fewer revoked
certificates than counted, is replaced before it is served. Revocations are never undone
(removeFromCRL is refused), so the count only grows. Device holds (OCSP's certificateHold while an
``ocsp-only`` profile's device is disabled, never on the CRL) come and go: a watch made with ``holds``
also reads when they last changed, and moves its generation when that does.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.crl import build_crl_der
from scep_server.store import CertStatus, Store
from scep_server.store.crls import PublishedCrlRecord

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]
WallClock = Callable[[], datetime]
DEFAULT_CHECK_INTERVAL = 1.0
DEFAULT_DEBOUNCE = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class RevocationWatch:
    """A generation number that changes whenever a revocation may have happened (see the module doc)."""

    def __init__(
        self, store: Store, *, interval: float = DEFAULT_CHECK_INTERVAL, clock: Monotonic = time.monotonic,
        holds: bool = False,
    ):
        """``holds``: also follow the device holds (``ocsp-only`` profiles), which come and go: when they
        last changed is read beside the count."""
        self._store = store
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._generation = 0
        self._revoked: int | None = None
        self._holds = holds
        self._holds_changed: tuple[datetime | None] | None = None
        self._checked_at = -math.inf
        self._changed_at = clock()

    @property
    def changed_at(self) -> float:
        """When (on the monotonic clock) the generation last changed."""
        return self._changed_at

    def current(self) -> int:
        """The generation, after counting the store's revocations if ``interval`` has passed.

        Raises StoreError when the store cannot be asked: then freshness cannot be vouched for.
        """
        with self._lock:
            if self._clock() - self._checked_at >= self._interval:
                revoked = self._store.count_certificates(status=CertStatus.REVOKED)
                self._checked_at = self._clock()
                if self._revoked is not None and revoked != self._revoked:
                    self._bump()
                self._revoked = revoked
                self._follow_holds()
            return self._generation

    def _follow_holds(self) -> None:
        if not self._holds:
            return
        changed = (self._store.holds_changed_at(),)
        if self._holds_changed is not None and changed != self._holds_changed:
            self._bump()
        self._holds_changed = changed

    @property
    def revoked(self) -> int:
        """How many revoked certificates the store held at the last count (0 before the first)."""
        return self._revoked or 0

    def notify(self) -> None:
        """This process revoked something: outdate every cache now."""
        with self._lock:
            self._bump()
            # Count again at the next look, so this very revocation does not bump the generation twice.
            self._checked_at = -math.inf

    def _bump(self) -> None:
        self._generation += 1
        self._changed_at = self._clock()


# --- CRL -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ServedCrl:
    der: bytes
    number: int
    covers: int  # revoked certificates the watch had counted before it was built: it lists at least those
    built_at: float  # on this process's monotonic clock; estimated from thisUpdate for one built elsewhere


class CrlSource(Protocol):
    """The CRLs a server serves: the issuing CA's (``current_der``), and each generation's by issuer."""

    def current_der(self) -> bytes: ...

    def crl_der(self, issuer: x509.Name) -> bytes | None: ...


class CrlCache:
    """The CA's full CRL (RFC 5280 §5), one for every process: built by one, kept in the store.

    :meth:`publish_due` is the scheduled side, run by the one process holding the CRL publishing lock:
    it builds and stores a CRL every ``refresh`` and after revocations, once they have been quiet for
    ``debounce`` seconds, so a burst of revocations yields one new CRL.

    :meth:`current_der` is the serving side, in every process: the newest stored CRL, looked for at most
    once per ``interval`` (one indexed query; the DER is read only when a newer CRL is there). It always
    includes every revocation reported before the call (and those of other processes within the watch
    interval): when the watch has counted more revoked certificates than the stored CRL covers, or
    nothing was published for well over ``refresh`` (no publisher runs), it builds and stores one itself
    rather than wait for the publisher. CRLNumbers come from the store's counter, so they only grow,
    whichever process builds.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        store: Store,
        *,
        validity: timedelta,
        refresh: timedelta,
        watch: RevocationWatch | None = None,
        debounce: float = DEFAULT_DEBOUNCE,
        interval: float = DEFAULT_CHECK_INTERVAL,
        clock: Monotonic = time.monotonic,
        now: WallClock = utcnow,
        wake: Callable[[], object] | None = None,
    ) -> None:
        if not timedelta(0) < refresh < validity:
            raise ValueError("refresh must be positive and shorter than the CRL validity")
        self._ca = ca
        self._store = store
        self._validity = validity
        self._refresh = refresh.total_seconds()
        # How old a stored CRL may be served: past the publisher's refresh, never near its nextUpdate.
        self._serve_for = (refresh + min(refresh / 4, (validity - refresh) / 2)).total_seconds()
        self.watch = watch if watch is not None else RevocationWatch(store, clock=clock)
        self._debounce = debounce
        self._interval = interval
        self._clock = clock
        self._now = now
        self._wake = wake
        self._lock = threading.Lock()
        self._served: _ServedCrl | None = None
        self._looked_at = -math.inf

    def current_der(self) -> bytes:
        """The DER CRL: the newest stored one, unless it misses a known revocation or is overdue."""
        self.watch.current()
        with self._lock:
            served = self._served
            if served is None or not self._servable(served) or self._clock() - self._looked_at >= self._interval:
                served = self._look()
            if served is None or not self._servable(served):
                served = self._publish()
            return served.der

    def crl_der(self, issuer: x509.Name) -> bytes | None:
        """The CRL when ``issuer`` is this CA's subject (:class:`CrlSource`), else None."""
        return self.current_der() if issuer == self._ca.ca_cert.subject else None

    def invalidate(self) -> None:
        """Report a revocation made by this process: the next CRL served includes it."""
        self.watch.notify()
        if self._wake is not None:
            self._wake()

    def publish_due(self) -> bool:
        """Build and store a new CRL if the schedule or a settled burst of revocations calls for one."""
        self.watch.current()
        with self._lock:
            served = self._look()
            if served is not None and not self._aged(served):
                if served.covers >= self.watch.revoked or self._clock() - self.watch.changed_at < self._debounce:
                    return False
            self._publish()
            return True

    def _servable(self, served: _ServedCrl) -> bool:
        return served.covers >= self.watch.revoked and self._clock() - served.built_at < self._serve_for

    def _aged(self, served: _ServedCrl) -> bool:
        return self._clock() - served.built_at >= self._refresh

    def _look(self) -> _ServedCrl | None:
        """Take the newest stored CRL if it is newer than the one served; the one served either way."""
        self._looked_at = self._clock()
        newer_than = 0 if self._served is None else self._served.number
        record = self._store.latest_crl(self._ca.issuer_name, newer_than=newer_than)
        if record is not None and self._signed_by_the_ca(record):
            age = max((self._now() - record.this_update).total_seconds(), 0.0)
            self._served = _ServedCrl(record.der, record.crl_number, record.revoked_count, self._clock() - age)
        return self._served

    def _signed_by_the_ca(self, record: PublishedCrlRecord) -> bool:
        """A stored CRL is served only if this CA signed it (not one left by a CA replaced since)."""
        key = self._ca.ca_cert.public_key()
        try:
            crl = x509.load_der_x509_crl(record.der)
        except ValueError:
            crl = None
        valid = (
            crl is not None and crl.issuer == self._ca.ca_cert.subject
            and isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) and crl.is_signature_valid(key)
        )
        if not valid:
            log.warning("stored CRL number %d of %s is not signed by this CA; not served", record.crl_number,
                        record.issuer)
        return valid

    def _publish(self) -> _ServedCrl:
        # Counted before the revocations are read: a revocation racing with this build is covered next time.
        covers = self.watch.revoked
        issuer = self._ca.issuer_name
        number = self._store.next_crl_number(issuer)
        this_update = self._now()
        der = build_crl_der(
            self._ca, self._store.iter_revoked(issuer), crl_number=number, now=this_update, validity=self._validity
        )
        self._store.store_crl(
            issuer=issuer, crl_number=number, der=der, this_update=this_update,
            next_update=this_update + self._validity, revoked_count=covers,
        )
        self._served = _ServedCrl(der, number, covers, self._clock())
        log.info("published CRL number %d of %s", number, issuer)
        return self._served
