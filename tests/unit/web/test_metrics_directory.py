"""The per-instance Prometheus directory of ``serve`` (serve.MetricsDirectory): one per running instance, held
by a lock, removed by its owner, and those of ended instances cleaned at start without touching live ones."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scep_server.serve import MetricsDirectory, remove_stale_metrics


def _held_by_someone(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_an_instance_gets_a_private_directory_and_holds_its_lock(tmp_path: Path) -> None:
    directory = MetricsDirectory.create(tmp_path)
    assert directory.path.parent == tmp_path / "metrics" and directory.path.is_dir()
    assert directory.instance.startswith(f"{os.getpid()}-")
    assert stat.S_IMODE(directory.path.stat().st_mode) == 0o700
    lock = tmp_path / "metrics" / f"{directory.instance}.lock"
    assert _held_by_someone(lock)
    (directory.path / "counter_1.db").write_bytes(b"samples")
    directory.remove()
    assert not directory.path.exists() and not lock.exists()


def test_a_second_instance_leaves_the_first_one_alone(tmp_path: Path) -> None:
    first = MetricsDirectory.create(tmp_path)
    (first.path / "counter_1.db").write_bytes(b"samples")
    second = MetricsDirectory.create(tmp_path)
    assert first.path != second.path
    assert (first.path / "counter_1.db").read_bytes() == b"samples"
    second.remove()
    assert first.path.is_dir()
    first.remove()
    assert list((tmp_path / "metrics").iterdir()) == []


def test_the_directories_of_ended_instances_are_removed_at_start(tmp_path: Path) -> None:
    root = tmp_path / "metrics"
    live = MetricsDirectory.create(tmp_path)
    (root / "7-ended").mkdir()
    (root / "7-ended" / "counter_8.db").write_bytes(b"old")
    (root / "7-ended.lock").touch()  # nobody holds it: the instance is gone
    (root / "orphan").mkdir()  # its lock file is gone: so is its instance
    (root / "counter_9.db").write_bytes(b"an older version's layout")  # never read, maybe still written
    (root / ".dead.locking").touch()
    os.utime(root / ".dead.locking", (time.time() - 120, time.time() - 120))  # left long ago
    (root / ".young.locking").touch()  # another instance may be about to lock it: left alone
    with open(root / ".taking.locking", "w") as taking:
        fcntl.flock(taking, fcntl.LOCK_EX)
        removed = remove_stale_metrics(root)
        assert (root / ".taking.locking").exists()
    assert sorted(removed) == ["7-ended", "orphan"]
    left = sorted(path.name for path in root.iterdir())
    assert left == sorted([live.instance, f"{live.instance}.lock", "counter_9.db", ".taking.locking",
                           ".young.locking"])
    live.remove()


def test_an_instance_that_ends_without_cleaning_up_is_cleaned_by_the_next(tmp_path: Path) -> None:
    # A server that exits (or is killed) before it could remove its directory.
    program = "import sys, pathlib; from scep_server.serve import MetricsDirectory; " \
              "MetricsDirectory.create(pathlib.Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", program, str(tmp_path)], check=True, timeout=60)
    (ended,) = [path for path in (tmp_path / "metrics").iterdir() if path.is_dir()]
    successor = MetricsDirectory.create(tmp_path)
    assert not ended.exists()
    assert [path for path in (tmp_path / "metrics").iterdir() if path.is_dir()] == [successor.path]
    successor.remove()


@pytest.mark.parametrize("taken", [True, False])
def test_a_lock_being_taken_is_left_to_its_taker(tmp_path: Path, taken: bool) -> None:
    root = tmp_path / "metrics"
    root.mkdir()
    locking = root / ".x.locking"
    with open(locking, "w") as holder:
        os.utime(locking, (time.time() - 120, time.time() - 120))  # past the grace for one being made
        if taken:
            fcntl.flock(holder, fcntl.LOCK_EX)
        remove_stale_metrics(root)
    assert locking.exists() is taken
