"""Failure budget: a client IP that keeps sending PKIOperations whose envelope fails gets HTTP 429.

What counts is a CertRep FAILURE with failInfo badMessageCheck: an envelope that cannot be decrypted
or whose content cannot be parsed (one indistinguishable answer), and a signature or messageDigest that
does not verify. At most ``max_failures`` of them per sliding ``window_seconds`` per IP; then every
PKIOperation from that IP is answered 429 with Retry-After (RFC 6585 §4, RFC 9110 §10.2.3) until the
oldest counted failure leaves the window. The state is in memory, per worker process, and bounded:
beyond ``max_tracked_ips`` the IPs whose last failure is oldest are forgotten.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from scep_server.config import FailureBudgetConfig

UNKNOWN_CLIENT = "-"  # requests without a peer address share one budget


class FailureBudget:
    """Per-IP sliding-window failure counter; thread-safe."""

    def __init__(
        self, max_failures: int, window_seconds: float, max_tracked_ips: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.max_tracked_ips = max_tracked_ips
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: FailureBudgetConfig) -> FailureBudget:
        return cls(config.max_failures, config.window_seconds, config.max_tracked_ips)

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0

    def retry_after(self, client: str | None) -> int | None:
        """Seconds ``client`` must wait before its next PKIOperation, or None when it may send one now."""
        if not self.enabled:
            return None
        now = self._clock()
        with self._lock:
            times = self._failures.get(client or UNKNOWN_CLIENT)
            if times is None:
                return None
            self._expire(times, now)
            if len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[0] + self.window_seconds - now))

    def record_failure(self, client: str | None) -> None:
        """Count one failed PKIOperation of ``client``."""
        if not self.enabled:
            return
        key = client or UNKNOWN_CLIENT
        now = self._clock()
        with self._lock:
            times = self._failures.get(key)
            if times is None:
                times = self._failures[key] = deque(maxlen=self.max_failures)
            self._failures.move_to_end(key)
            self._expire(times, now)
            times.append(now)
            while len(self._failures) > self.max_tracked_ips:
                self._failures.popitem(last=False)

    def tracked(self) -> int:
        """How many client IPs are being tracked (for tests and metrics)."""
        with self._lock:
            return len(self._failures)

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window_seconds:
            times.popleft()
