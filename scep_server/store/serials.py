"""Certificate serial numbers as the store keeps them.

RFC 5280 §4.1.2.2 allows serials of up to 20 octets, more than any portable integer column holds, so
they are stored as lowercase hex text without leading zeros. The CA draws them; the store only checks
that a serial fits and converts it.
"""

from __future__ import annotations

MAX_SERIAL_BITS = 160


def serial_storable(serial: int) -> bool:
    """Whether ``serial`` is a serial number this store can hold (positive, at most 160 bits): anything
    else, such as a serial a client sent, names no stored certificate."""
    return isinstance(serial, int) and not isinstance(serial, bool) and 0 < serial < 1 << MAX_SERIAL_BITS


def serial_hex(serial: int) -> str:
    """The stored form of a certificate serial number: lowercase hex without leading zeros."""
    if isinstance(serial, bool) or not isinstance(serial, int):
        raise ValueError("serial must be an int")
    if not 0 < serial < 1 << MAX_SERIAL_BITS:
        raise ValueError(f"serial must be positive and at most {MAX_SERIAL_BITS} bits")
    return format(serial, "x")


def parse_serial_hex(text: str) -> int:
    """A serial number as people and Intune write it (hex, optional ``0x``, ``:`` or spaces, any case);
    ``ValueError`` unless it is hex and a serial number this store can hold."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "").replace(" ", "")
    serial = int(cleaned, 16)
    serial_hex(serial)  # the same bounds as storing it
    return serial
