"""Publishing revocation status: the CA's CRL and its OCSP answers, never stale after a revocation.

Each process keeps its own CRL and OCSP responses. What makes them stale is a revocation, made in this
process or in another one (a CLI command, another gunicorn worker, another replica), so both caches
depend on a :class:`RevocationWatch`: its generation changes when this process reports a revocation
(:meth:`RevocationWatch.notify`, called by ``invalidate``) and when the number of revoked certificates
in the store has changed since it last looked (at most once per ``interval``, one cheap count). Anything
built under an older generation is rebuilt before it is served. Revocations are never undone
(removeFromCRL is refused), so the count only grows.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp as x509_ocsp

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.crl import REASONS, build_crl
from scep_server.ca.ocsp import (
    CertId,
    IssuerHashes,
    MalformedOcspRequest,
    OcspRequest,
    ResponseTimes,
    SingleAnswer,
    parse_request,
    signed_response,
    unsuccessful_response,
)
from scep_server.ca.responder import DelegatedResponder
from scep_server.errors import CAError, StoreError
from scep_server.store import CertificateRecord, CertStatus, Store
from scep_server.store.repository import MAX_SERIAL_BITS

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]
WallClock = Callable[[], datetime]
DEFAULT_CHECK_INTERVAL = 1.0
DEFAULT_DEBOUNCE = 1.0
DEFAULT_OCSP_VALIDITY = timedelta(hours=1)
DEFAULT_OCSP_CACHE_SIZE = 4096


def utcnow() -> datetime:
    return datetime.now(UTC)


class RevocationWatch:
    """A generation number that changes whenever a revocation may have happened (see the module doc)."""

    def __init__(self, store: Store, *, interval: float = DEFAULT_CHECK_INTERVAL, clock: Monotonic = time.monotonic):
        self._store = store
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._generation = 0
        self._revoked: int | None = None
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
            return self._generation

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
class _PublishedCrl:
    der: bytes
    generation: int
    built_at: float


class CrlCache:
    """The CA's full CRL (RFC 5280 §5), rebuilt when a revocation outdates it and every ``refresh``.

    :meth:`current_der` always includes every revocation reported before the call (and those of other
    processes within the watch interval). :meth:`publish_due` is the scheduled side: run it from a
    background loop and it renews the CRL every ``refresh`` and after revocations, once they have been
    quiet for ``debounce`` seconds, so a burst of revocations yields one new CRL.
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
        self.watch = watch if watch is not None else RevocationWatch(store, clock=clock)
        self._debounce = debounce
        self._clock = clock
        self._now = now
        self._wake = wake
        self._lock = threading.Lock()
        self._published: _PublishedCrl | None = None

    def current_der(self) -> bytes:
        """The DER CRL: the cached one unless a revocation or the refresh interval outdated it."""
        generation = self.watch.current()
        with self._lock:
            published = self._published
            if published is None or published.generation != generation or self._aged(published):
                published = self._publish(generation)
            return published.der

    def invalidate(self) -> None:
        """Report a revocation made by this process: the next CRL served includes it."""
        self.watch.notify()
        if self._wake is not None:
            self._wake()

    def publish_due(self) -> bool:
        """Build a new CRL if the schedule or a settled burst of revocations calls for one; True if built."""
        generation = self.watch.current()
        with self._lock:
            published = self._published
            if published is not None and not self._aged(published):
                if published.generation == generation or self._clock() - self.watch.changed_at < self._debounce:
                    return False
            self._publish(generation)
            return True

    def _aged(self, published: _PublishedCrl) -> bool:
        return self._clock() - published.built_at >= self._refresh

    def _publish(self, generation: int) -> _PublishedCrl:
        # The generation was read before the store: a revocation racing with this build outdates it.
        issuer = self._ca.issuer_name
        number = self._store.next_crl_number(issuer)
        crl = build_crl(
            self._ca, self._store.iter_revoked(issuer), crl_number=number, now=self._now(), validity=self._validity
        )
        self._published = _PublishedCrl(crl.public_bytes(Encoding.DER), generation, self._clock())
        log.info("published CRL number %d of %s", number, issuer)
        return self._published


# --- OCSP ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OcspAnswer:
    """An OCSPResponse to send, and until when HTTP caches may keep it (RFC 5019 §6.2)."""

    der: bytes
    status: x509_ocsp.OCSPResponseStatus
    produced_at: datetime | None = None
    next_update: datetime | None = None
    max_age: int | None = None


@dataclass(frozen=True, slots=True)
class _CachedResponse:
    der: bytes
    generation: int
    times: ResponseTimes


class OcspResponder:
    """Answers OCSP requests (RFC 6960) about the CA's certificates from the store.

    Responses without a nonce whose certificates are all known are cached, keyed by their CertIDs,
    until half their validity has passed or the watch reports a revocation. A nonce makes a response
    unique, and an ``unknown`` may turn ``good`` when the certificate is issued, so those are not kept.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        store: Store,
        responder: DelegatedResponder,
        watch: RevocationWatch,
        *,
        validity: timedelta = DEFAULT_OCSP_VALIDITY,
        cache_size: int = DEFAULT_OCSP_CACHE_SIZE,
        now: WallClock = utcnow,
    ) -> None:
        if validity < timedelta(minutes=1):
            raise ValueError("the OCSP response validity must be at least a minute")
        self._ca = ca
        self._issuer = IssuerHashes(ca.ca_cert)
        self._store = store
        self._responder = responder
        self._watch = watch
        self._validity = validity
        self._cache_size = cache_size
        self._now = now
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[bytes, ...], _CachedResponse] = OrderedDict()

    def respond(self, der: bytes) -> OcspAnswer:
        """The OCSPResponse for a DER request: malformedRequest, unauthorized, tryLater or signed."""
        try:
            request = parse_request(der)
        except MalformedOcspRequest as exc:
            log.info("malformed OCSP request: %s", exc)
            return _unsuccessful(x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        if not any(self._issuer.issued(cert_id) for cert_id in request.cert_ids):
            # RFC 5019 §2.2.3: not authoritative for any certificate asked about.
            return _unsuccessful(x509_ocsp.OCSPResponseStatus.UNAUTHORIZED)
        try:
            return self._answer(request)
        except StoreError as exc:
            log.warning("OCSP answered tryLater: %s", exc)
            return _unsuccessful(x509_ocsp.OCSPResponseStatus.TRY_LATER)
        except CAError as exc:
            log.error("OCSP responder cannot sign: %s", exc)
            return _unsuccessful(x509_ocsp.OCSPResponseStatus.INTERNAL_ERROR)

    def invalidate(self) -> None:
        """Report a revocation made by this process: no response built before it is served again."""
        self._watch.notify()
        with self._lock:
            self._cache.clear()

    def _answer(self, request: OcspRequest) -> OcspAnswer:
        generation = self._watch.current()
        now = self._now()
        key = tuple(cert_id.der for cert_id in request.cert_ids)
        cached = self._cached(key, generation, now) if request.nonce is None else None
        if cached is not None:
            return self._successful(cached.der, cached.times, now)
        answers = [self._status(cert_id) for cert_id in request.cert_ids]
        stamp = now.replace(microsecond=0)  # as encoded: max-age then never runs past the nextUpdate sent
        times = ResponseTimes(produced_at=stamp, this_update=stamp, next_update=stamp + self._validity)
        der = signed_response(answers, self._responder.current(), times, request.nonce)
        if request.nonce is None and all(a.status is not x509_ocsp.OCSPCertStatus.UNKNOWN for a in answers):
            self._keep(key, _CachedResponse(der, generation, times))
        return self._successful(der, times, now)

    def _status(self, cert_id: CertId) -> SingleAnswer:
        """RFC 6960 §2.2: good, revoked with time and reason, or unknown (also for other issuers)."""
        record = self._record(cert_id) if self._issuer.issued(cert_id) else None
        if record is None:
            return SingleAnswer(cert_id, x509_ocsp.OCSPCertStatus.UNKNOWN)
        if record.status is not CertStatus.REVOKED or record.revoked_at is None:
            return SingleAnswer(cert_id, x509_ocsp.OCSPCertStatus.GOOD)
        # As in the CRL, an 'unspecified' reason is left out (RFC 5280 §5.3.1).
        reason = REASONS.get(record.revocation_reason or 0)
        reason = None if reason is x509.ReasonFlags.unspecified else reason
        return SingleAnswer(cert_id, x509_ocsp.OCSPCertStatus.REVOKED, record.revoked_at, reason)

    def _record(self, cert_id: CertId) -> CertificateRecord | None:
        if not 0 < cert_id.serial_number < 1 << MAX_SERIAL_BITS:
            return None  # no serial the store can hold, so none this CA issued
        return self._store.get_certificate(cert_id.serial_number, self._ca.issuer_name)

    def _cached(self, key: tuple[bytes, ...], generation: int, now: datetime) -> _CachedResponse | None:
        with self._lock:
            cached = self._cache.get(key)
            if cached is None:
                return None
            half_life = cached.times.this_update + (cached.times.next_update - cached.times.this_update) / 2
            if cached.generation != generation or not cached.times.this_update <= now < half_life:
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return cached

    def _keep(self, key: tuple[bytes, ...], entry: _CachedResponse) -> None:
        with self._lock:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _successful(self, der: bytes, times: ResponseTimes, now: datetime) -> OcspAnswer:
        max_age = max(0, int((times.next_update - now).total_seconds()))
        return OcspAnswer(der, x509_ocsp.OCSPResponseStatus.SUCCESSFUL, times.produced_at, times.next_update, max_age)


def _unsuccessful(status: x509_ocsp.OCSPResponseStatus) -> OcspAnswer:
    return OcspAnswer(unsuccessful_response(status), status)
