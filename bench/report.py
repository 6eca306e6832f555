"""One row per measurement, the ratios between rows, and the table (Markdown, so the README can paste it).

Ratios: ``ours/micromdm`` and ``ours/floor`` divide an enrollment row's rate by the micromdm row's and
the crypto floor's rate measured in the same invocation; figures of different invocations (or of
another machine) are not comparable on a shared 2-core box, ratios of one invocation are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Kind(StrEnum):
    FLOOR = "floor"
    OURS = "ours"  # an enrollment row of our server: ratios apply, its errors fail the run
    OURS_OTHER = "ours-other"  # our server, not enrollments (OCSP, scale): its errors fail the run
    REFERENCE = "reference"  # micromdm: measured, its failures are its own


@dataclass(slots=True)
class Row:
    key: str
    label: str
    kind: Kind
    unit: str = "enroll/s"
    rate: float | None = None
    p50: float | None = None  # seconds
    p99: float | None = None
    ok: int = 0
    errors: int = 0
    server_ms: float | None = None  # server CPU per operation
    client_share: float | None = None  # client CPU / (wall time x cores)
    notes: list[str] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fails_run(self) -> bool:
        return self.kind in (Kind.OURS, Kind.OURS_OTHER) and self.errors > 0


def skipped(key: str, label: str, kind: Kind, reason: str) -> Row:
    return Row(key, label, kind, skipped=reason.strip().splitlines()[0][:200] if reason.strip() else "unknown")


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def _reference_rate(rows: Sequence[Row], kind: Kind) -> float | None:
    rates = [r.rate for r in rows if r.kind is kind and r.skipped is None and r.rate]
    return rates[0] if rates else None


def ratios(row: Row, rows: Sequence[Row]) -> tuple[float | None, float | None]:
    """(ours/micromdm, ours/floor) for an enrollment row of ours; None where it does not apply."""
    if row.kind is not Kind.OURS or not row.rate:
        return None, None
    micromdm, floor = _reference_rate(rows, Kind.REFERENCE), _reference_rate(rows, Kind.FLOOR)
    return (row.rate / micromdm if micromdm else None), (row.rate / floor if floor else None)


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f}" if seconds >= 1 else f"{seconds * 1000:.1f}"


def _cells(row: Row, rows: Sequence[Row]) -> list[str]:
    if row.skipped is not None:
        return [row.label, "skipped", "", "", "", "", "", "", "", "", f"skipped: {row.skipped}"]
    vs_micromdm, vs_floor = ratios(row, rows)
    share = "-" if row.client_share is None else f"{row.client_share:.0%}"
    return [row.label, f"{_num(row.rate)} {row.unit}", _ms(row.p50), _ms(row.p99), str(row.ok), str(row.errors),
            _num(row.server_ms, 2), share, _num(vs_micromdm, 2), _num(vs_floor, 3), "; ".join(row.notes)]  # fmt: skip


HEADER = ["run", "rate", "p50 ms", "p99 ms", "ok", "errors", "server CPU ms/op", "client CPU", "ours/micromdm",
          "ours/floor", "notes"]  # fmt: skip


def markdown(rows: Sequence[Row]) -> str:
    """The table, padded so it also reads well in a terminal."""
    table = [HEADER] + [_cells(r, rows) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    right = {1, 2, 3, 4, 5, 6, 7, 8, 9}

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + ":" if i in right else "-" * w for i, w in enumerate(widths)]
    return "\n".join([line(table[0]), "| " + " | ".join(rule) + " |", *(line(c) for c in table[1:])])


def error_lines(rows: Sequence[Row], most: int = 5) -> list[str]:
    lines = []
    for row in rows:
        for reason, count in sorted(row.reasons.items(), key=lambda kv: -kv[1])[:most]:
            lines.append(f"- {row.label}: {count} x {reason}")
    return lines


def write_json(path: Path, rows: Sequence[Row], meta: dict[str, Any]) -> None:
    results = []
    for row in rows:
        vs_micromdm, vs_floor = ratios(row, rows)
        results.append({**asdict(row), "ours_over_micromdm": vs_micromdm, "ours_over_floor": vs_floor})
    path.write_text(json.dumps({"meta": meta, "rows": results}, indent=2, default=str) + "\n", encoding="utf-8")
