"""One fake clock for every test that moves time by hand.

The code under test takes a ``clock`` (or ``now``) callable: monotonic or unix seconds as a float, or an
aware ``datetime``. :class:`FakeClock` answers with whatever it holds and moves only when told.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Generic, TypeVar

T = TypeVar("T", float, datetime)


class FakeClock(Generic[T]):
    """A clock that stands still at ``now`` until a test sets ``now`` or calls :meth:`advance`."""

    def __init__(self, now: T) -> None:
        self.now: T = now

    def __call__(self) -> T:
        return self.now

    def advance(self, seconds: float) -> T:
        """Move forward by ``seconds`` (a ``timedelta`` of them for a ``datetime`` clock); the new time."""
        if isinstance(self.now, datetime):
            self.now = self.now + timedelta(seconds=seconds)
        else:
            self.now = self.now + seconds
        return self.now
