"""What the console's dashboard charts: issuance per hour and per day, failures by reason and Intune code.

Times are UTC. The hourly chart ends with the current hour (24 bars), the daily one with today (14 bars);
the failure charts cover a window back from now (:data:`FAILURE_WINDOWS`). A failure's reason is its
SCEP failInfo by RFC 8894's name (``badRequest``), an Intune refusal its validateRequest code
(``ChallengeExpired``). Counts of valid certificates expiring soon complete the picture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from scep_server.store import Store
from scep_server.store.dashboard import FAILURE_PREFIX, DashboardRepository

__all__ = ["EXPIRY_HORIZONS", "FAILURE_WINDOWS", "Bar", "Chart", "Dashboard", "DashboardView", "fail_info_name"]

HOURS = 24
DAYS = 14
# The windows the failure charts can cover, by the name a form offers them under.
FAILURE_WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "14d": timedelta(days=14)}
DEFAULT_FAILURE_WINDOW = "24h"
EXPIRY_HORIZONS = (7, 30)  # days


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of a chart: what it counts (``label``; ``long_label`` for a screen reader) and how many."""

    label: str
    long_label: str
    count: int


@dataclass(frozen=True, slots=True)
class Chart:
    """A titled series of bars."""

    title: str
    bars: tuple[Bar, ...]

    @property
    def total(self) -> int:
        return sum(bar.count for bar in self.bars)

    @property
    def peak(self) -> int:
        return max((bar.count for bar in self.bars), default=0)


@dataclass(frozen=True, slots=True)
class DashboardView:
    taken_at: datetime
    issued_per_hour: Chart
    issued_per_day: Chart
    failures_by_reason: Chart
    refusals_by_intune_code: Chart
    failure_window: str
    expiring: dict[int, int]  # days ahead -> valid certificates whose notAfter falls before then


class Dashboard:
    """The dashboard's numbers over one store; ``now`` is the clock (UTC-aware)."""

    def __init__(self, store: Store, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._counts = DashboardRepository(store.engine)
        self._now = now

    def view(self, failure_window: str = DEFAULT_FAILURE_WINDOW) -> DashboardView:
        """Every chart as of now; ``ValueError`` for a window not in :data:`FAILURE_WINDOWS`."""
        if failure_window not in FAILURE_WINDOWS:
            raise ValueError(f"window must be one of {', '.join(FAILURE_WINDOWS)}, not {failure_window!r}")
        now = self._now().astimezone(UTC)
        since = now - FAILURE_WINDOWS[failure_window]
        horizons = [now + timedelta(days=days) for days in EXPIRY_HORIZONS]
        return DashboardView(
            taken_at=now,
            issued_per_hour=self._hourly(now),
            issued_per_day=self._daily(now),
            failures_by_reason=_ranked(
                "Failed requests by reason",
                {fail_info_name(outcome): n for outcome, n in self._counts.failures_by_outcome(since, now).items()},
            ),
            refusals_by_intune_code=_ranked(
                "Challenges Intune refused, by code", self._counts.refusals_by_intune_code(since, now)
            ),
            failure_window=failure_window,
            expiring=dict(zip(EXPIRY_HORIZONS, self._counts.expiring_within(now, horizons), strict=True)),
        )

    def _hourly(self, now: datetime) -> Chart:
        end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        edges = [end - timedelta(hours=HOURS - n) for n in range(HOURS + 1)]
        counts = self._counts.issued_per_bucket(edges)
        bars = (Bar(f"{start:%H}", f"{start:%Y-%m-%d %H}:00 to {start + timedelta(hours=1):%H}:00 UTC", count)
                for start, count in zip(edges, counts, strict=False))
        return Chart("Certificates issued per hour, last 24 hours (UTC)", tuple(bars))

    def _daily(self, now: datetime) -> Chart:
        end = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        edges = [end - timedelta(days=DAYS - n) for n in range(DAYS + 1)]
        counts = self._counts.issued_per_bucket(edges)
        bars = (Bar(f"{start:%m-%d}", f"{start:%A %Y-%m-%d} (UTC)", count)
                for start, count in zip(edges, counts, strict=False))
        return Chart("Certificates issued per day, last 14 days (UTC)", tuple(bars))


def fail_info_name(outcome: str) -> str:
    """The RFC 8894 failInfo name of a stored outcome: ``FAILURE:BAD_MESSAGE_CHECK`` is ``badMessageCheck``."""
    first, *rest = outcome.removeprefix(FAILURE_PREFIX).lower().split("_")
    return first + "".join(word.capitalize() for word in rest)


def _ranked(title: str, counts: dict[str, int]) -> Chart:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return Chart(title, tuple(Bar(name, name, count) for name, count in ordered))
