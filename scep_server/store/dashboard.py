"""The console dashboard's aggregates: issuance per time bucket, failures by reason, refusals by Intune code.

Every query is one SQLAlchemy Core statement that SQLite and PostgreSQL run alike: buckets are counted
with one ``SUM(CASE ...)`` per bucket over the rows of the whole range (no date functions, which the two
databases spell differently), so a chart of 24 hours costs one range scan of ``ix_certificates_issued_at_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.sql.elements import ColumnElement

from scep_server.store.base import Repository, aware, guard
from scep_server.store.records import CertStatus
from scep_server.store.tables import certificates, enrollment_steps, scep_events

__all__ = ["FAILURE_PREFIX", "NO_CODE", "REFUSED", "VALIDATED", "DashboardRepository"]

FAILURE_PREFIX = "FAILURE:"  # the scep_events outcomes of failed operations (FAILURE:BAD_REQUEST, ...)
VALIDATED = "validated"  # the enrollment step of Intune's validateRequest answer ...
REFUSED = "refused"  # ... and its outcome when Intune refused the challenge
NO_CODE = "unknown"  # the name a refusal without Intune's code is counted under
MAX_BUCKETS = 100

_cert = certificates.c
_event = scep_events.c
_step = enrollment_steps.c


class DashboardRepository(Repository):
    """Read-only counts for the dashboard."""

    def issued_per_bucket(self, boundaries: Sequence[datetime]) -> list[int]:
        """How many certificates were issued in each ``[boundaries[i], boundaries[i + 1])``."""
        return self._bucketed(_cert.issued_at, boundaries)

    def expiring_within(self, now: datetime, horizons: Sequence[datetime]) -> list[int]:
        """How many valid certificates expire in ``[now, horizon)``, for each horizon."""
        start = aware(now, "now")
        counts = [func.coalesce(func.sum(case((_cert.not_after < aware(h, "horizon"), 1), else_=0)), 0)
                  for h in horizons]
        if not counts:
            return []
        query = select(*counts).where(_cert.status == CertStatus.VALID.value, _cert.not_after >= start)
        return self._one_row(query)

    def failures_by_outcome(self, since: datetime, until: datetime) -> dict[str, int]:
        """The failed SCEP operations in ``[since, until)`` per stored outcome (``FAILURE:BAD_REQUEST``, ...)."""
        query = (
            select(_event.outcome, func.count())
            .where(_event.occurred_at >= aware(since, "since"), _event.occurred_at < aware(until, "until"),
                   _event.outcome.like(FAILURE_PREFIX + "%"))
            .group_by(_event.outcome)
        )
        return self._counts(query)

    def refusals_by_intune_code(self, since: datetime, until: datetime) -> dict[str, int]:
        """The challenges Intune refused in ``[since, until)`` per validateRequest code."""
        query = (
            select(_step.intune_code, func.count())
            .where(_step.occurred_at >= aware(since, "since"), _step.occurred_at < aware(until, "until"),
                   _step.step == VALIDATED, _step.outcome == REFUSED)
            .group_by(_step.intune_code)
        )
        return self._counts(query)

    def _bucketed(self, column: ColumnElement[datetime], boundaries: Sequence[datetime]) -> list[int]:
        edges = [aware(edge, "boundary") for edge in boundaries]
        if len(edges) < 2:
            return []
        if len(edges) > MAX_BUCKETS + 1 or any(a >= b for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(f"the boundaries must rise, at most {MAX_BUCKETS + 1} of them")
        sums = [func.coalesce(func.sum(case(((column >= start) & (column < end), 1), else_=0)), 0)
                for start, end in zip(edges, edges[1:], strict=False)]
        return self._one_row(select(*sums).where(column >= edges[0], column < edges[-1]))

    def _one_row(self, query: Select[Any]) -> list[int]:
        with guard(), self._engine.connect() as conn:
            row = conn.execute(query).one()
        return [int(value) for value in row]

    def _counts(self, query: Select[Any, int]) -> dict[str, int]:
        with guard(), self._engine.connect() as conn:
            return {NO_CODE if key is None else str(key): int(count) for key, count in conn.execute(query)}
