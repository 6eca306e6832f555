"""The task units: which lock each singleton runs under, and Intune revocation rounds taking turns."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from scep_server.jobs import tasks
from scep_server.jobs.locks import (
    CRL_PUBLISHING,
    INTUNE_REVOCATION_SYNC,
    OCSP_RESPONDER_RENEWAL,
    FileLock,
)
from scep_server.jobs.tasks import RevocationRounds
from scep_server.service.intune_sync import RevocationSync, SyncReport

REPORT = SyncReport(downloaded=1, revoked=1, uploaded=1, upload_acknowledged=True)


class FakeSync:
    def __init__(self, lock_path: Path) -> None:
        self.lock_path = lock_path
        self.rounds = 0
        self.locked_during_round: list[bool] = []

    def run_safely(self) -> SyncReport:
        self.rounds += 1
        self.locked_during_round.append(not FileLock(self.lock_path, "probe").try_acquire())
        return REPORT


def rounds(tmp_path: Path) -> tuple[RevocationRounds, FakeSync, Path]:
    path = tmp_path / "intune-revocations.lock"
    sync = FakeSync(path)
    return RevocationRounds(cast(RevocationSync, sync), FileLock(path, "intune-revocations")), sync, path


def test_a_round_holds_the_round_lock_and_lets_go_after(tmp_path: Path) -> None:
    runner, sync, path = rounds(tmp_path)
    assert runner.run_safely() is REPORT
    assert runner.run_safely() is REPORT
    assert sync.locked_during_round == [True, True]
    other = FileLock(path, "x")
    assert other.try_acquire()  # free between rounds
    other.release()


def test_a_round_is_skipped_while_another_runs(tmp_path: Path) -> None:
    runner, sync, path = rounds(tmp_path)
    elsewhere = FileLock(path, "x")
    assert elsewhere.try_acquire()
    assert runner.run_safely() is None and sync.rounds == 0
    elsewhere.release()
    assert runner.run_safely() is REPORT and sync.rounds == 1


def test_a_failing_round_still_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "intune-revocations.lock"

    class Broken:
        def run_safely(self) -> SyncReport:
            raise RuntimeError("unexpected")

    runner = RevocationRounds(cast(RevocationSync, Broken()), FileLock(path, "intune-revocations"))
    with pytest.raises(RuntimeError):
        runner.run_safely()
    assert FileLock(path, "x").try_acquire()


def test_singletons_run_under_their_lock_and_leased_tasks_under_none(tmp_path: Path) -> None:
    runner, _, _ = rounds(tmp_path)
    noop: Any = lambda: 0  # noqa: E731
    singletons = [
        (tasks.crl_publishing(noop), CRL_PUBLISHING),
        (tasks.ocsp_responder_renewal(noop), OCSP_RESPONDER_RENEWAL),
        (tasks.intune_revocation_sync(runner, every=300), INTUNE_REVOCATION_SYNC),
    ]
    assert [task.lock for task, _ in singletons] == [lock for _, lock in singletons]
    assert singletons[2][0].every == 300
    leased = [tasks.intune_outbox(noop), tasks.undelivered_certificates(noop)]
    assert all(task.lock is None for task in leased)
    assert leased[1].every == tasks.UNDELIVERED_SWEEP_SECONDS
    names = [task.name for task, _ in singletons] + [task.name for task in leased]
    assert len(set(names)) == len(names)
