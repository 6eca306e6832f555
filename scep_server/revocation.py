"""The CA's current CRL, built from the store and cached per process."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from cryptography.hazmat.primitives.serialization import Encoding

from .ca.authority import CertificateAuthority
from .ca.crl import build_crl
from .store import Store


class CrlCache:
    """Builds a full CRL on demand and keeps it for ``refresh`` (well inside its validity)."""

    def __init__(self, ca: CertificateAuthority, store: Store, *, validity: timedelta, refresh: timedelta) -> None:
        self._ca = ca
        self._store = store
        self._validity = validity
        self._refresh = refresh.total_seconds()
        self._lock = threading.Lock()
        self._der: bytes | None = None
        self._built_at = 0.0

    def current_der(self) -> bytes:
        """The DER CRL, rebuilt when older than the refresh interval or invalidated."""
        with self._lock:
            if self._der is None or time.monotonic() - self._built_at > self._refresh:
                self._der = self._build()
                self._built_at = time.monotonic()
            return self._der

    def invalidate(self) -> None:
        with self._lock:
            self._der = None

    def _build(self) -> bytes:
        number = self._store.next_crl_number(self._ca.issuer_name)
        revoked = self._store.iter_revoked(self._ca.issuer_name)
        crl = build_crl(self._ca, revoked, crl_number=number, validity=self._validity)
        return crl.public_bytes(Encoding.DER)
