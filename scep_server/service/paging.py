"""Keyset paging for every listing: rows newest first by (time, id), a page and the cursor to the next one.

A cursor is opaque to its reader: the url-safe base64 (unpadded) of the compact JSON ``[iso time, id]``
of the last row of a page, and the next page holds the rows whose (time, id) sorts before it. Unlike an
offset, it neither skips nor repeats a row when rows are added meanwhile. A cursor that is not one this
module made is a ``ValueError`` ("cursor is not valid"), as is a limit outside ``1..MAX_LIMIT``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "CursorPage",
    "check_limit",
    "decode_cursor",
    "encode_cursor",
    "page_of",
]

T = TypeVar("T")

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_CURSOR_LENGTH = 200  # far more than any cursor this module makes (about 60 characters)
MAX_ROW_ID = 2**63 - 1  # a BIGINT primary key
_CURSOR_TEXT = re.compile(r"[A-Za-z0-9_-]+")
_INVALID = "cursor is not valid"


@dataclass(frozen=True, slots=True)
class CursorPage(Generic[T]):
    """One page of a listing; ``next_cursor`` is None on the last page."""

    items: list[T]
    next_cursor: str | None


def encode_cursor(moment: datetime, row_id: int) -> str:
    """The cursor after the row at ``moment`` (timezone-aware) with ``row_id``."""
    if moment.utcoffset() is None:
        raise ValueError("a cursor's time must be timezone-aware")
    payload = json.dumps([moment.astimezone(UTC).isoformat(), row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, int]:
    """The (UTC time, row id) a cursor of :func:`encode_cursor` holds; ``ValueError`` for anything else."""
    if not isinstance(text, str) or len(text) > MAX_CURSOR_LENGTH or not _CURSOR_TEXT.fullmatch(text):
        raise ValueError(_INVALID)
    try:
        decoded = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError(_INVALID) from None
    return _cursor_values(decoded)


def check_limit(limit: int, name: str = "limit") -> int:
    """``limit`` if it is a whole number from 1 to :data:`MAX_LIMIT`; ``ValueError`` naming it otherwise."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"{name} must be a whole number from 1 to {MAX_LIMIT}, not {limit!r}")
    return limit


def page_of(rows: Sequence[T], limit: int, key: Callable[[T], tuple[datetime, int]]) -> CursorPage[T]:
    """The page of ``rows`` read with ``limit + 1``: the first ``limit``, and a cursor after the last of
    them when the extra row shows that more follow."""
    items = list(rows[:limit])
    if len(rows) <= limit or not items:
        return CursorPage(items, None)
    return CursorPage(items, encode_cursor(*key(items[-1])))


def _cursor_values(decoded: object) -> tuple[datetime, int]:
    if not isinstance(decoded, list) or len(decoded) != 2:
        raise ValueError(_INVALID)
    moment_text, row_id = decoded
    if not isinstance(moment_text, str) or isinstance(row_id, bool) or not isinstance(row_id, int):
        raise ValueError(_INVALID)
    if not 0 < row_id <= MAX_ROW_ID:
        raise ValueError(_INVALID)
    try:
        moment = datetime.fromisoformat(moment_text)
    except ValueError:
        raise ValueError(_INVALID) from None
    if moment.utcoffset() is None:
        raise ValueError(_INVALID)
    try:
        return moment.astimezone(UTC), row_id
    except OverflowError:  # a zone that moves the time outside the calendar
        raise ValueError(_INVALID) from None
