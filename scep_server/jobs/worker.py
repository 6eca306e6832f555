"""One background thread per process, running the tasks of tasks.py.

Every ``interval`` seconds the worker tries the lock of each singleton task: it keeps the locks it
holds and takes the free ones, so when a holder dies another process takes its tasks over within one
interval. Every tick (``interval`` seconds, sooner when woken) it runs, in order, the singleton tasks
whose lock it holds and every task that claims its rows by lease (tasks.py says which is which, and
why), each at most once per its ``every``. A task that raises is logged and does not stop the others.
A task that hangs (a call that never returns) would keep its locks while running nothing: when the task
thread shows no progress for ``stall_after`` seconds, the lock thread lets every lock go until it does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from scep_server.jobs.locks import Lock

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0
DEFAULT_STALL_AFTER = 300.0  # longer than any task's own timeouts and retries
LockProvider = Callable[[str], Lock]


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of background work.

    ``lock``: the name of the singleton lock whose holder alone runs it, or None when it claims its rows
    by lease and every process may run it. ``every``: at least this many seconds between two runs in
    one process (None: every worker tick).
    """

    name: str
    run: Callable[[], object]
    lock: str | None = None
    every: float | None = None

    def __post_init__(self) -> None:
        if self.every is not None and self.every <= 0:
            raise ValueError("every must be positive")


class BackgroundWorker:
    """Runs its tasks every ``interval`` seconds (sooner when woken) until stopped.

    Two threads: one tries the singleton locks every ``interval``, the other runs the tasks. A long
    task (an Intune round retrying) thus delays neither a takeover nor the holder's check of its locks.
    """

    def __init__(
        self, tasks: list[Task], *, locks: LockProvider, interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic, stall_after: float = DEFAULT_STALL_AFTER,
    ) -> None:
        if interval <= 0 or stall_after <= interval:
            raise ValueError("interval must be positive and stall_after longer than it")
        self._tasks = tasks  # the list, not a copy: wiring adds tasks after the worker exists
        self._make_lock = locks
        self._interval = interval
        self._clock = clock
        self._locks: dict[str, Lock] = {}
        self._locks_mutex = threading.Lock()
        self._last_run: dict[str, float] = {}
        self._stall_after = stall_after
        self._progress = clock()  # when the task thread last started or finished a task
        self._stalled = False
        self.wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def interval(self) -> float:
        return self._interval

    def holding(self) -> frozenset[str]:
        """The names of the singleton locks this worker holds (as of its last try)."""
        with self._locks_mutex:
            return frozenset(name for name, lock in self._locks.items() if lock.held)

    def start(self) -> None:
        if not self._tasks or self._threads:
            return
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._elect_loop, name="scep-background-locks", daemon=True),
            threading.Thread(target=self._run_loop, name="scep-background", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Stop the threads and let go of every lock, so another process takes over at once."""
        self._stopping.set()
        self.wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        with self._locks_mutex:
            locks = list(self._locks.values())
        for lock in locks:
            lock.release()

    def run_once(self) -> None:
        """One tick of both threads: renew or take the singleton locks, then run what is due."""
        self.elect()
        self.run_due()

    def elect(self) -> bool:
        """Try the lock of every singleton task; True when one was taken just now. While the task thread
        is stuck, let every lock go instead, so that another process runs the tasks."""
        if self._stuck():
            return False
        names = dict.fromkeys(task.lock for task in self._tasks if task.lock is not None)
        taken = [self._hold(self._lock(name)) for name in names]
        return any(taken)

    def run_due(self) -> None:
        """Run, in order, every task that is due and whose lock, if it has one, is held."""
        self._progress = self._clock()
        for task in self._tasks:
            if task.lock is not None and not self._holds(task.lock):
                self._last_run.pop(task.name, None)  # on taking over, the new holder runs it at once
                continue
            if self._due(task):
                self._run(task)

    def _lock(self, name: str) -> Lock:
        with self._locks_mutex:
            lock = self._locks.get(name)
            if lock is None:
                lock = self._locks[name] = self._make_lock(name)
            return lock

    def _holds(self, name: str) -> bool:
        with self._locks_mutex:
            lock = self._locks.get(name)
        return lock is not None and lock.held

    def _hold(self, lock: Lock) -> bool:
        """Try ``lock``; True when it was taken by this try (not held before)."""
        was_held = lock.held
        try:
            held = lock.try_acquire()
        except Exception:  # a lock that cannot be asked is not held; the next try asks again
            log.exception("trying lock %s failed", lock.name)
            held = False
            _let_go(lock)
        if held and not was_held:
            log.info("holding lock %s: this process runs its tasks", lock.name)
        elif was_held and not held:
            log.warning("lost lock %s: another process runs its tasks now", lock.name)
        return held and not was_held

    def _due(self, task: Task) -> bool:
        now = self._clock()
        last = self._last_run.get(task.name)
        if task.every is not None and last is not None and now - last < task.every:
            return False
        self._last_run[task.name] = now
        return True

    def _run(self, task: Task) -> None:
        try:
            task.run()
        except Exception:  # one failing task must not stop the others or the thread
            log.exception("background task %s failed", task.name)
        finally:
            self._progress = self._clock()

    def _stuck(self) -> bool:
        stuck = self._clock() - self._progress > self._stall_after
        if stuck and not self._stalled:
            log.error("background tasks made no progress for %.0f s: letting go of locks %s",
                      self._stall_after, ", ".join(sorted(self.holding())) or "(none held)")
            with self._locks_mutex:
                locks = list(self._locks.values())
            for lock in locks:
                _let_go(lock)
        elif self._stalled and not stuck:
            log.warning("background tasks make progress again: trying the locks again")
        self._stalled = stuck
        return stuck

    def _elect_loop(self) -> None:
        while not self._stopping.is_set():
            if self.elect():
                self.wake.set()  # run the newly held tasks now, not at the next tick
            self._stopping.wait(self._interval)

    def _run_loop(self) -> None:
        while not self._stopping.is_set():
            self.run_due()
            self.wake.wait(self._interval)
            self.wake.clear()


def _let_go(lock: Lock) -> None:
    try:
        lock.release()
    except Exception:  # its state is unknown either way: the holder's death or session end frees it
        log.exception("releasing lock %s failed", lock.name)
