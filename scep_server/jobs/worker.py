"""One background thread per process: deferred validations and the Intune notification outbox.

Every task is idempotent across processes: rows are leased with conditional updates in the store, so
several gunicorn workers (or replicas on one PostgreSQL) can run this side by side.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from scep_server.errors import ScepServerError
from scep_server.service.issuance import IssuanceService, Profile
from scep_server.store import Store

log = logging.getLogger("scep_server.jobs.worker")

Task = Callable[[], object]
# Longer than the slowest validation can take (every retry timing out) so a lease does not run out mid-way.
LEASE = timedelta(minutes=10)


class DeferredValidations:
    """Retries validations that Intune could not answer when the request came in."""

    def __init__(self, store: Store, issuance: IssuanceService, profiles: dict[str, Profile]) -> None:
        self._store = store
        self._issuance = issuance
        self._profiles = profiles

    def run_once(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        done = 0
        for record in self._store.due_deferred(now=now):
            profile = self._profiles.get(record.profile)
            if profile is None or record.next_attempt_at is None:
                continue
            if not self._store.lease_deferred(
                profile=record.profile, transaction_id=record.transaction_id,
                expected_next_attempt_at=record.next_attempt_at, lease_until=datetime.now(UTC) + LEASE,
            ):
                continue
            try:
                self._issuance.retry_deferred(profile, record, now)
            except ScepServerError as exc:
                log.info("deferred transaction=%s ended: %s", record.transaction_id, exc)
            done += 1
        return done


class BackgroundWorker:
    """Runs its tasks every ``interval`` seconds (sooner when woken) until stopped."""

    def __init__(self, tasks: list[tuple[str, Task]], *, interval: float = 2.0) -> None:
        self._tasks = tasks  # the list, not a copy: wiring adds tasks after the worker exists
        self._interval = interval
        self.wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._tasks and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="scep-background", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> None:
        for name, task in self._tasks:
            try:
                task()
            except Exception:  # one failing task must not stop the others or the thread
                log.exception("background task %s failed", name)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self.run_once()
            self.wake.wait(self._interval)
            self.wake.clear()


class Every:
    """Run ``task`` at most once per ``seconds`` (the worker itself ticks more often)."""

    def __init__(self, seconds: float, task: Task, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self._task = task
        self._clock = clock
        self._last: float | None = None

    def __call__(self) -> object:
        now = self._clock()
        if self._last is not None and now - self._last < self._seconds:
            return None
        self._last = now
        return self._task()
