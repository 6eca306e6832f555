"""Printing for people: aligned ``key: value`` rows, with what a terminal would act on escaped."""

from __future__ import annotations

from collections.abc import Iterable

from scep_server.pki.names import printable


def print_fields(rows: Iterable[tuple[str, object]], width: int) -> None:
    """One ``key:`` padded to ``width``, then the value; names, SANs and transaction ids may come from a
    device, so control characters are escaped."""
    for key, value in rows:
        print(f"{key + ':':<{width}}{printable(str(value))}")
