"""Serial numbers: their stored form and the bounds of what the store can hold (finding 7)."""

from __future__ import annotations

import pytest

from scep_server.store import MAX_SERIAL_BITS, parse_serial_hex, serial_hex, serial_storable

MAX_SERIAL = (1 << 160) - 1


def test_serial_hex_format() -> None:
    assert serial_hex(0xABCDEF) == "abcdef"
    assert serial_hex(MAX_SERIAL) == "f" * 40
    with pytest.raises(ValueError):
        serial_hex(True)


@pytest.mark.parametrize("serial", [0, -1, 1 << 160, True])
def test_finding7_serials_out_of_the_store_bounds_are_not_storable(serial: int) -> None:
    assert serial_storable(serial) is False


def test_finding7_largest_serial_is_storable() -> None:
    assert serial_storable((1 << 160) - 1) and serial_storable(1)


@pytest.mark.parametrize(
    ("text", "serial"),
    [("0A1B", 0x0A1B), ("0x0a1b", 0x0A1B), ("0a:1b", 0x0A1B), (" 0A 1B ", 0x0A1B), ("f" * 40, MAX_SERIAL)],
)


def test_parse_serial_hex_reads_the_ways_serials_are_written(text: str, serial: int) -> None:
    assert parse_serial_hex(text) == serial


@pytest.mark.parametrize("text", ["", "0", "00", "xyz", "1" + "0" * 40, "-1"])
def test_parse_serial_hex_refuses_what_names_no_storable_serial(text: str) -> None:
    with pytest.raises(ValueError):
        parse_serial_hex(text)


def test_the_bound_is_160_bits() -> None:
    assert MAX_SERIAL_BITS == 160
    assert serial_storable(MAX_SERIAL) and not serial_storable(MAX_SERIAL + 1)
