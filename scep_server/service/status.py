"""Read-only operational state for /metrics: the store's queues and CRL times, the OCSP responder certificate.

:meth:`OperationalStatus.current` is what a scrape reads. It never raises for a database that is down: its
``store`` part is then None (and /metrics says so), and the rest still answers. Answers are kept for
``max_age`` seconds, so that several Prometheus servers scraping every worker cost one round of queries
per worker and interval; one thread refreshes while the others wait for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from scep_server.ca.certfiles import load_single_certificate
from scep_server.ca.responder import OCSP_CERT
from scep_server.errors import CAError, StoreError
from scep_server.store import Store
from scep_server.store.status import CrlTimes, StatusQueries, StoreSnapshot

__all__ = ["CrlTimes", "OperationalStatus", "Status", "StoreSnapshot", "Validity"]

log = logging.getLogger(__name__)

DEFAULT_MAX_AGE = 5.0  # seconds


@dataclass(frozen=True, slots=True)
class Validity:
    """A certificate's notBefore and notAfter."""

    not_before: datetime
    not_after: datetime


@dataclass(frozen=True, slots=True)
class Status:
    """One look: ``store`` None when the database could not answer, ``ocsp_responder`` None when its
    certificate cannot be read (not created yet, or being replaced)."""

    taken_at: datetime
    store: StoreSnapshot | None
    ocsp_responder: Validity | None


class OperationalStatus:
    """The status of one CA's server, looked up at most once per ``max_age`` seconds."""

    def __init__(
        self, store: Store, *, issuer: str, ca_dir: Path, max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.monotonic, now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._queries = StatusQueries(store.engine)
        self._issuer = issuer
        self._ocsp_cert = Path(ca_dir) / OCSP_CERT
        self._max_age = max_age
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._last: tuple[float, Status] | None = None

    def current(self) -> Status:
        with self._lock:
            last = self._last
            if last is not None and self._clock() - last[0] < self._max_age:
                return last[1]
            status = Status(self._now(), self._store_snapshot(), self._responder_validity())
            self._last = (self._clock(), status)
            return status

    def _store_snapshot(self) -> StoreSnapshot | None:
        try:
            return self._queries.snapshot(self._issuer)
        except StoreError as exc:
            log.warning("operational status: the store did not answer: %s", exc)
            return None

    def _responder_validity(self) -> Validity | None:
        try:
            cert = load_single_certificate(self._ocsp_cert)
        except (CAError, OSError):
            return None
        return Validity(cert.not_valid_before_utc, cert.not_valid_after_utc)
