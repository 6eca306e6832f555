"""A profile's cap on PKIOperations in progress at once in one worker process (``max_concurrent_operations``).

An Intune enrollment holds a thread while Intune validates and acknowledges it. Without a cap, an Intune
slowdown lets one profile's requests take every thread of the worker, and everything else the worker
serves (the other profiles, GetCACert, OCSP, health checks) waits behind them. Past its cap a
profile's PKIOperation is answered at once with HTTP 503 and ``Retry-After``, which SCEP clients retry.
The cap is per worker process, like the worker's threads; 0 means none.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from scep_server.config import ServerConfig

__all__ = ["BUSY_RETRY_AFTER", "OperationSlots"]

BUSY_RETRY_AFTER = 5  # seconds: a busy profile usually has a slot again within a validation's time


class OperationSlots:
    """Non-blocking slots per capped profile."""

    def __init__(self, caps: Mapping[str, int]) -> None:
        self._caps = {name: cap for name, cap in caps.items() if cap > 0}
        self._slots = {name: threading.BoundedSemaphore(cap) for name, cap in self._caps.items()}

    @classmethod
    def from_config(cls, config: ServerConfig) -> OperationSlots:
        return cls({profile.name: profile.max_concurrent_operations for profile in config.profiles})

    def cap(self, profile: str) -> int | None:
        """The profile's cap, None when it has none."""
        return self._caps.get(profile)

    @contextmanager
    def slot(self, profile: str) -> Iterator[bool]:
        """True inside the block when the operation may go on (holding a slot until the block ends),
        False when the profile's slots are all taken."""
        semaphore = self._slots.get(profile)
        if semaphore is None:
            yield True
            return
        if not semaphore.acquire(blocking=False):
            yield False
            return
        try:
            yield True
        finally:
            semaphore.release()
