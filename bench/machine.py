"""What the machine's processes spent, read from /proc: CPU per process group, per process, the whole box.

Every figure is cumulative; a measurement is the difference of two samples taken around the timed window.
Processes that exit between the samples take their CPU with them, so the figures are lower bounds.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def _stat_fields(pid_dir: Path) -> list[str] | None:
    """The fields of /proc/PID/stat after ``(comm)``: state ppid pgrp ... utime(11) stime(12)."""
    with contextlib.suppress(OSError, IndexError):
        return (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
    return None


def _processes() -> Iterator[tuple[Path, list[str]]]:
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry)
            if fields is not None:
                yield entry, fields


def _ticks(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])


def group_cpu(pgid: int) -> float:
    """user+system seconds of every live process in a process group (gunicorn master and workers)."""
    return sum(_ticks(f) for _, f in _processes() if int(f[2]) == pgid) / _TICK


def pid_cpu(pid: int) -> float:
    fields = _stat_fields(PROC / str(pid))
    return _ticks(fields) / _TICK if fields else 0.0


def named_cpu(name: str) -> float:
    """user+system seconds of every live process whose command name starts with ``name`` (``postgres``)."""
    total = 0
    for entry, fields in _processes():
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().startswith(name):
                total += _ticks(fields)
    return total / _TICK


def busy_cpu() -> float:
    """Seconds of CPU the whole machine spent not idle (all cores, from /proc/stat)."""
    values = [int(v) for v in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / _TICK


def group_peak_rss_mb(pgid: int) -> float | None:
    """The largest VmHWM (peak resident set) among the live processes of a group, in MB."""
    peaks = [kb for entry, f in _processes() if int(f[2]) == pgid and (kb := _hwm_kb(entry)) is not None]
    return max(peaks) / 1024 if peaks else None


def pid_peak_rss_mb(pid: int) -> float | None:
    kb = _hwm_kb(PROC / str(pid))
    return kb / 1024 if kb is not None else None


def _hwm_kb(pid_dir: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in (pid_dir / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


@dataclass(frozen=True, slots=True)
class CpuSample:
    """One sample of each watched party's CPU seconds and of the machine's busy seconds."""

    parties: dict[str, float]
    busy: float


class CpuMeter:
    """Samples named CPU sources (e.g. ``{"server": lambda: group_cpu(pgid)}``) and the machine together."""

    def __init__(self, sources: dict[str, Callable[[], float]]) -> None:
        self._sources = sources

    def sample(self) -> CpuSample:
        return CpuSample({name: read() for name, read in self._sources.items()}, busy_cpu())

    @staticmethod
    def spent(before: CpuSample, after: CpuSample) -> tuple[dict[str, float], float]:
        """CPU seconds per party between two samples, and the machine's busy seconds in that time."""
        return {k: after.parties[k] - before.parties[k] for k in before.parties}, after.busy - before.busy
