"""The background worker: singleton tasks only where their lock is held, leased ones everywhere."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from scep_server.jobs.locks import FileLock
from scep_server.jobs.worker import BackgroundWorker, Task
from tests.support.clocks import FakeClock


class SharedLocks:
    """Locks of one fake database: a name is held by at most one lock object, until released or lost."""

    def __init__(self) -> None:
        self.holders: dict[str, FakeLock] = {}

    def __call__(self, name: str) -> FakeLock:
        return FakeLock(self, name)


class FakeLock:
    def __init__(self, shared: SharedLocks, name: str) -> None:
        self._shared = shared
        self._name = name
        self.held = False
        self.fail = False

    @property
    def name(self) -> str:
        return self._name

    def try_acquire(self) -> bool:
        if self.fail:
            raise OSError("the lock's backing is gone")
        holder = self._shared.holders.setdefault(self._name, self)
        self.held = holder is self
        return self.held

    def release(self) -> None:
        if self._shared.holders.get(self._name) is self:
            del self._shared.holders[self._name]
        self.held = False

    def lose(self) -> None:
        """As when the holder's session dies: the lock is free, and the holder finds out on its next try."""
        del self._shared.holders[self._name]


def recorder(runs: list[str], name: str) -> Task:
    return Task(name, lambda: runs.append(name))


def test_only_the_lock_holder_runs_a_singleton_and_everyone_runs_leased_tasks() -> None:
    locks, runs = SharedLocks(), list[str]()

    def tasks(who: str) -> list[Task]:
        return [
            Task("publish", lambda: runs.append(f"{who}:publish"), lock="crl"),
            Task("outbox", lambda: runs.append(f"{who}:outbox")),
        ]

    first, second = BackgroundWorker(tasks("a"), locks=locks), BackgroundWorker(tasks("b"), locks=locks)
    for _ in range(3):
        first.run_once()
        second.run_once()
    assert runs.count("a:publish") == 3 and "b:publish" not in runs
    assert runs.count("a:outbox") == runs.count("b:outbox") == 3
    assert first.holding() == {"crl"} and second.holding() == frozenset()


def test_another_worker_takes_over_when_the_holder_loses_its_lock(caplog: pytest.LogCaptureFixture) -> None:
    locks, runs, clock = SharedLocks(), [], FakeClock(100.0)
    first = BackgroundWorker([Task("sync", lambda: runs.append("a"), lock="sync", every=300)], locks=locks,
                             clock=clock)
    second = BackgroundWorker([Task("sync", lambda: runs.append("b"), lock="sync", every=300)], locks=locks,
                              clock=clock)
    first.run_once()
    second.run_once()
    holder = locks.holders["sync"]
    holder.lose()
    clock.now += 2
    with caplog.at_level(logging.INFO, logger="scep_server.jobs.worker"):
        second.run_once()  # the next tick: the lock is free, and the new holder runs the task at once
        first.run_once()
    assert runs == ["a", "b"]
    assert second.holding() == {"sync"} and first.holding() == frozenset()
    assert "holding lock sync" in caplog.text and "lost lock sync" in caplog.text


def test_every_spaces_the_runs_of_a_task() -> None:
    clock, runs = FakeClock(100.0), []
    worker = BackgroundWorker([Task("sweep", lambda: runs.append(clock.now), every=300)], locks=SharedLocks(),
                              clock=clock)
    for _ in range(4):
        worker.run_once()
        clock.now += 100
    assert runs == [100.0, 400.0]


def test_a_failing_task_or_lock_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    locks, runs = SharedLocks(), []

    def boom() -> None:
        raise RuntimeError("task failed")

    tasks = [Task("boom", boom), Task("locked", lambda: runs.append("locked"), lock="x"), recorder(runs, "after")]
    worker = BackgroundWorker(tasks, locks=locks)
    worker.run_once()
    locks.holders["x"].fail = True
    worker.run_once()
    assert runs == ["locked", "after", "after"]
    assert "background task boom failed" in caplog.text and "trying lock x failed" in caplog.text


def test_stop_releases_the_locks() -> None:
    locks = SharedLocks()
    worker = BackgroundWorker([Task("publish", lambda: None, lock="crl")], locks=locks)
    worker.run_once()
    assert "crl" in locks.holders
    worker.stop()
    assert locks.holders == {} and worker.holding() == frozenset()


def test_the_thread_elects_one_runner_among_workers_sharing_a_lock_file(tmp_path: Path) -> None:
    ran: dict[str, threading.Event] = {"a": threading.Event(), "b": threading.Event()}
    workers = {
        who: BackgroundWorker(
            [Task("publish", ran[who].set, lock="crl")], interval=0.05,
            locks=lambda name: FileLock(tmp_path / f"{name}.lock", name),
        )
        for who in ran
    }
    for worker in workers.values():
        worker.start()
    try:
        assert ran["a"].wait(5) or ran["b"].wait(5)
        winner = "a" if ran["a"].is_set() else "b"
        loser = "b" if winner == "a" else "a"
        assert not ran[loser].wait(0.3)
        assert workers[winner].holding() == {"crl"}
        workers[winner].stop()  # a holder that goes away frees the lock: the other takes over
        assert ran[loser].wait(5)
        assert workers[loser].holding() == {"crl"}
    finally:
        for worker in workers.values():
            worker.stop()


def test_a_stuck_task_thread_lets_the_locks_go_until_it_moves_again(caplog: pytest.LogCaptureFixture) -> None:
    clock, locks = FakeClock(0.0), SharedLocks()
    worker = BackgroundWorker([Task("publish", lambda: None, lock="crl")], locks=locks, clock=clock,
                              interval=1, stall_after=30)
    worker.run_once()
    assert locks.holders["crl"] is not None and worker.holding() == {"crl"}
    clock.advance(29)
    assert worker.elect() is False and worker.holding() == {"crl"}  # slow is not stuck
    clock.advance(2)  # the task thread has shown no progress for 31 s: a task hangs
    assert worker.elect() is False
    assert locks.holders == {} and worker.holding() == frozenset()
    assert "made no progress for 30 s: letting go of locks crl" in caplog.text
    other = BackgroundWorker([Task("publish", lambda: None, lock="crl")], locks=locks, clock=clock, interval=1)
    other.run_once()
    assert other.holding() == {"crl"}  # another process runs the singleton meanwhile
    other.stop()
    worker.run_due()  # the task thread moves again
    assert worker.elect() is True and worker.holding() == {"crl"}
    assert "make progress again" in caplog.text


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        Task("x", lambda: None, every=0)
    with pytest.raises(ValueError):
        BackgroundWorker([], locks=SharedLocks(), interval=0)
    with pytest.raises(ValueError):
        BackgroundWorker([], locks=SharedLocks(), interval=5, stall_after=5)
