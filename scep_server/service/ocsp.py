"""Answering OCSP requests (RFC 6960) from the store, with the signed answers cached per process.

Only answers to requests without a nonce whose certificates are all known are kept: a nonce makes a
response unique (RFC 6960 §4.4.1), and an ``unknown`` may turn ``good`` when the certificate is issued.
A kept answer is served until half its validity has passed, and never once the
:class:`~scep_server.service.publishing.RevocationWatch` reports a revocation or a change of device holds
(in this process at once, in another one within the watch's interval). A held certificate (its device
disabled, ``device_lifecycle: ocsp-only``) is answered revoked with reason certificateHold since the hold.

Two indexes lead to the same kept answers. The exact request bytes answer a repeated request without
parsing it (:meth:`OcspResponder.cached`, the HTTP layer's fast path); they can only hold requests that
were parsed once and found to carry no nonce. The CertIDs asked about let another encoding of the same
question (other extensions, a requestorName) reuse the signature.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from cryptography import x509
from cryptography.x509 import ocsp as x509_ocsp

from scep_server.ca.authority import CertificateAuthority
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
from scep_server.pki.reasons import CRLReason
from scep_server.service.publishing import RevocationWatch, WallClock, utcnow
from scep_server.store import CertificateRecord, CertStatus, Store
from scep_server.store.serials import MAX_SERIAL_BITS

log = logging.getLogger(__name__)

DEFAULT_OCSP_VALIDITY = timedelta(hours=1)
DEFAULT_OCSP_CACHE_SIZE = 4096

_Key = TypeVar("_Key", bound=Hashable)


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
    renew_at: datetime = field(init=False)  # half the validity: from then on a fresher answer is signed

    def __post_init__(self) -> None:
        times = self.times
        object.__setattr__(self, "renew_at", times.this_update + (times.next_update - times.this_update) / 2)

    def fresh(self, generation: int, now: datetime) -> bool:
        return self.generation == generation and self.times.this_update <= now < self.renew_at

    def answer(self, now: datetime) -> OcspAnswer:
        times = self.times
        max_age = max(0, int((times.next_update - now).total_seconds()))
        return OcspAnswer(self.der, x509_ocsp.OCSPResponseStatus.SUCCESSFUL, times.produced_at, times.next_update,
                          max_age)  # fmt: skip


MAX_KEPT_REQUEST_BYTES = 1024  # larger requests are answered from the CertID index only


class OcspService(Protocol):
    """Answers OCSP requests: one CA's :class:`OcspResponder`, or a router over several."""

    def respond(self, der: bytes) -> OcspAnswer: ...

    def cached(self, der: bytes) -> OcspAnswer | None: ...

    def invalidate(self) -> None: ...


class OcspResponder:
    """Answers OCSP requests (RFC 6960) about the CA's certificates from the store (see the module doc)."""

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
        self._by_request: OrderedDict[bytes, _CachedResponse] = OrderedDict()
        self._by_cert_ids: OrderedDict[tuple[bytes, ...], _CachedResponse] = OrderedDict()

    def respond(self, der: bytes) -> OcspAnswer:
        """The OCSPResponse for a DER request: malformedRequest, unauthorized, tryLater or signed."""
        cached = self.cached(der)
        if cached is not None:
            return cached
        try:
            request = parse_request(der)
        except MalformedOcspRequest as exc:
            log.info("malformed OCSP request: %s", exc)
            return _unsuccessful(x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        if not any(self._issuer.issued(cert_id) for cert_id in request.cert_ids):
            # RFC 5019 §2.2.3: not authoritative for any certificate asked about.
            return _unsuccessful(x509_ocsp.OCSPResponseStatus.UNAUTHORIZED)
        try:
            return self._answer(der, request)
        except StoreError as exc:
            log.warning("OCSP answered tryLater: %s", exc)
            return _unsuccessful(x509_ocsp.OCSPResponseStatus.TRY_LATER)
        except CAError as exc:
            log.error("OCSP responder cannot sign: %s", exc)
            return _unsuccessful(x509_ocsp.OCSPResponseStatus.INTERNAL_ERROR)

    def cached(self, der: bytes) -> OcspAnswer | None:
        """The kept answer to exactly these request bytes while it is fresh; None: ask :meth:`respond`.

        Only the bytes are looked up: nothing is parsed, signed or encoded.
        """
        with self._lock:
            if der not in self._by_request:
                return None
        try:
            generation = self._watch.current()
        except StoreError:
            return None  # freshness cannot be vouched for: respond() answers tryLater
        now = self._now()
        entry = self._take(self._by_request, der, generation, now)
        return None if entry is None else entry.answer(now)

    def invalidate(self) -> None:
        """Report a revocation made by this process: no response built before it is served again."""
        self._watch.notify()
        with self._lock:
            self._by_request.clear()
            self._by_cert_ids.clear()

    def _answer(self, der: bytes, request: OcspRequest) -> OcspAnswer:
        generation = self._watch.current()
        now = self._now()
        cert_ids = tuple(cert_id.der for cert_id in request.cert_ids)
        if request.nonce is None:
            entry = self._take(self._by_cert_ids, cert_ids, generation, now)
            if entry is not None:
                self._keep(der, cert_ids, entry)
                return entry.answer(now)
        answers = [self._status(cert_id) for cert_id in request.cert_ids]
        stamp = now.replace(microsecond=0)  # as encoded: max-age then never runs past the nextUpdate sent
        times = ResponseTimes(produced_at=stamp, this_update=stamp, next_update=stamp + self._validity)
        entry = _CachedResponse(signed_response(answers, self._responder.current(), times, request.nonce),
                                generation, times)  # fmt: skip
        if request.nonce is None and all(a.status is not x509_ocsp.OCSPCertStatus.UNKNOWN for a in answers):
            self._keep(der, cert_ids, entry)
        return entry.answer(now)

    def _status(self, cert_id: CertId) -> SingleAnswer:
        """RFC 6960 §2.2: good, revoked with time and reason, or unknown (also for other issuers)."""
        record = self._record(cert_id) if self._issuer.issued(cert_id) else None
        if record is None:
            return SingleAnswer(cert_id, x509_ocsp.OCSPCertStatus.UNKNOWN)
        if record.status is CertStatus.VALID and record.device_hold_at is not None:
            # Its device is disabled (an ocsp-only profile): on hold until it is enabled again, never on the CRL.
            return SingleAnswer(cert_id, x509_ocsp.OCSPCertStatus.REVOKED, record.device_hold_at,
                                CRLReason.CERTIFICATE_HOLD.flag)
        if record.status is not CertStatus.REVOKED or record.revoked_at is None:
            return SingleAnswer(cert_id, x509_ocsp.OCSPCertStatus.GOOD)
        # As in the CRL, an 'unspecified' reason is left out (RFC 5280 §5.3.1).
        reason: x509.ReasonFlags | None = CRLReason(record.revocation_reason or 0).flag
        reason = None if reason is x509.ReasonFlags.unspecified else reason
        return SingleAnswer(cert_id, x509_ocsp.OCSPCertStatus.REVOKED, record.revoked_at, reason)

    def _record(self, cert_id: CertId) -> CertificateRecord | None:
        if not 0 < cert_id.serial_number < 1 << MAX_SERIAL_BITS:
            return None  # no serial the store can hold, so none this CA issued
        return self._store.get_certificate(cert_id.serial_number, self._ca.issuer_name)

    def _take(
        self, cache: OrderedDict[_Key, _CachedResponse], key: _Key, generation: int, now: datetime
    ) -> _CachedResponse | None:
        """The fresh entry under ``key`` (now the most recently used one); a stale one is dropped."""
        with self._lock:
            entry = cache.get(key)
            if entry is None:
                return None
            if not entry.fresh(generation, now):
                del cache[key]
                return None
            cache.move_to_end(key)
            return entry

    def _keep(self, der: bytes, cert_ids: tuple[bytes, ...], entry: _CachedResponse) -> None:
        with self._lock:
            # Real requests are a few hundred bytes; a padded one must not make the bytes index hold
            # up to the body limit per entry (memory an unauthenticated client could fill).
            if len(der) <= MAX_KEPT_REQUEST_BYTES:
                self._put(self._by_request, der, entry)
            self._put(self._by_cert_ids, cert_ids, entry)

    def _put(self, cache: OrderedDict[_Key, _CachedResponse], key: _Key, entry: _CachedResponse) -> None:
        cache[key] = entry
        cache.move_to_end(key)
        while len(cache) > self._cache_size:
            cache.popitem(last=False)


def _unsuccessful(status: x509_ocsp.OCSPResponseStatus) -> OcspAnswer:
    return OcspAnswer(unsuccessful_response(status), status)
