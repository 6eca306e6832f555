"""Cursors for keyset paging: they round-trip exactly, stay url-safe, and nothing but a cursor decodes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scep_server.service.paging import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    CursorPage,
    check_limit,
    decode_cursor,
    encode_cursor,
    page_of,
)

MOMENT = datetime(2026, 5, 1, 8, 30, 15, 123456, tzinfo=UTC)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_a_cursor_holds_the_time_and_id_it_was_made_of() -> None:
    assert decode_cursor(encode_cursor(MOMENT, 42)) == (MOMENT, 42)


def test_a_time_in_another_zone_comes_back_as_the_same_instant_in_utc() -> None:
    paris = MOMENT.astimezone(timezone(timedelta(hours=2)))
    moment, row_id = decode_cursor(encode_cursor(paris, 7))
    assert (moment, row_id) == (MOMENT, 7) and moment.tzinfo is UTC


def test_a_cursor_is_compact_json_in_unpadded_url_safe_base64() -> None:
    cursor = encode_cursor(MOMENT, 42)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    padded = cursor + "=" * (-len(cursor) % 4)
    assert json.loads(base64.urlsafe_b64decode(padded)) == [MOMENT.isoformat(), 42]


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
    st.integers(min_value=1, max_value=2**63 - 1),
)
def test_every_time_and_id_round_trip(moment: datetime, row_id: int) -> None:
    cursor = encode_cursor(moment, row_id)
    assert decode_cursor(cursor) == (moment, row_id)
    assert len(cursor) <= 200


def test_a_naive_time_makes_no_cursor() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_cursor(datetime(2026, 5, 1), 1)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor",
        "abc+/",  # standard base64, not url-safe
        "A",  # not base64 at all
        _b64("not json"),
        _b64("{}"),
        _b64("[]"),
        _b64(f'["{MOMENT.isoformat()}"]'),
        _b64(f'["{MOMENT.isoformat()}",1,2]'),
        _b64("[1,2]"),
        _b64('["yesterday",1]'),
        _b64('["2026-05-01T08:00:00",1]'),  # no zone
        _b64(f'["{MOMENT.isoformat()}",true]'),
        _b64(f'["{MOMENT.isoformat()}",0]'),
        _b64(f'["{MOMENT.isoformat()}",-5]'),
        _b64(f'["{MOMENT.isoformat()}",1.5]'),
        _b64(f'["{MOMENT.isoformat()}","1"]'),
        _b64(f'["{MOMENT.isoformat()}",{2**63}]'),
        _b64('["0001-01-01T00:00:00+01:00",1]'),  # outside the calendar once in UTC
        base64.urlsafe_b64encode(b"\xff\xfe[1]").decode().rstrip("="),
        encode_cursor(MOMENT, 1) * 10,  # too long to be one
    ],
)
def test_anything_but_a_cursor_is_refused(cursor: str) -> None:
    with pytest.raises(ValueError, match="^cursor is not valid$"):
        decode_cursor(cursor)


def test_a_cursor_that_is_not_text_is_refused() -> None:
    with pytest.raises(ValueError, match="cursor is not valid"):
        decode_cursor(b"abc")  # type: ignore[arg-type]


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, True, 2.0, "10"])
def test_limits_outside_the_range_are_refused_by_name(limit: object) -> None:
    with pytest.raises(ValueError, match="^per_page must be a whole number from 1 to 1000"):
        check_limit(limit, "per_page")  # type: ignore[arg-type]


def test_limits_in_the_range_pass() -> None:
    assert [check_limit(limit) for limit in (1, DEFAULT_LIMIT, MAX_LIMIT)] == [1, 100, 1000]


def _key(row: tuple[datetime, int]) -> tuple[datetime, int]:
    return row


def test_a_page_read_with_one_row_more_has_a_cursor_after_its_last_row() -> None:
    rows = [(MOMENT - timedelta(minutes=i), 10 - i) for i in range(4)]
    page = page_of(rows, 3, _key)
    assert page.items == rows[:3]
    assert page.next_cursor is not None and decode_cursor(page.next_cursor) == rows[2]


@pytest.mark.parametrize("count", [0, 2, 3])
def test_the_last_page_has_no_cursor(count: int) -> None:
    rows = [(MOMENT - timedelta(minutes=i), 10 - i) for i in range(count)]
    assert page_of(rows, 3, _key) == CursorPage(rows, None)
