"""The revokedCertificates entries of a CRL (RFC 5280 §5.1.2.6) as DER, written one after another.

A full CRL can list a million entries. cryptography's CRL builder and asn1crypto both need Python
objects for every entry (several per entry), which at that size cost seconds and hundreds of MB
before a byte is written, and neither can encode a list it is handed one entry at a time. So the DER
of an entry ``SEQUENCE { serial INTEGER, revocationDate Time, crlEntryExtensions OPTIONAL }`` is
written here from three primitives, and only these:

- a tag and definite length (X.690 §8.1.2-3: short form below 128, else long form);
- a non-negative INTEGER (X.690 §8.3: big-endian, minimal, a leading zero octet when the top bit is set);
- a Time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5, §5.1.2.6), whole seconds
  in UTC with a ``Z``.

The reasonCode extensions (§5.3.1) are asn1crypto's, encoded once per reason. Property tests check
each entry against asn1crypto's encoding of it, and whole CRLs against cryptography's builder.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from asn1crypto import crl as asn1_crl

from scep_server.pki.reasons import CRLReason

RevokedEntry = tuple[int, datetime, int | None]

INTEGER = 0x02
SEQUENCE = 0x30
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
SERIAL_LIMIT = 1 << 159  # cryptography's bound for serials it encodes: at most 20 octets (RFC 5280 §4.1.2.2)
EARLIEST = datetime(1950, 1, 1, tzinfo=UTC)  # what UTCTime reaches back to; earlier is refused, as cryptography does
GENERALIZED_FROM_YEAR = 2050

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_HOURS_MINUTES = tuple(f"{m // 60:02}{m % 60:02}".encode() for m in range(24 * 60))
_SECONDS = tuple(f"{s:02}Z".encode() for s in range(60))


def header(tag: int, length: int) -> bytes:
    """The identifier and definite-length octets of a value of ``length`` content octets."""
    if length < 0x80:
        return bytes((tag, length))
    size = (length.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + length.to_bytes(size, "big")


class TimeEncoder:
    """Times as DER, the date part formatted once per day seen (formatting is the costly part)."""

    def __init__(self) -> None:
        self._days: dict[int, bytes] = {}

    def __call__(self, when: datetime) -> bytes:
        """UTCTime or GeneralizedTime of ``when`` to the second; naive means UTC (as in cryptography)."""
        since = when - (_EPOCH if when.tzinfo is not None else _NAIVE_EPOCH)
        day = self._days.get(since.days) or self._day(since.days)
        return day + _HOURS_MINUTES[since.seconds // 60] + _SECONDS[since.seconds % 60]

    def _day(self, days: int) -> bytes:
        date = _EPOCH + timedelta(days=days)
        if date < EARLIEST:
            raise ValueError(f"{date:%Y-%m-%d} is before 1950, which a CRL's times cannot encode")
        if date.year < GENERALIZED_FROM_YEAR:
            prefix = header(UTC_TIME, 13) + date.strftime("%y%m%d").encode()
        else:
            prefix = header(GENERALIZED_TIME, 15) + date.strftime("%Y%m%d").encode()
        self._days[days] = prefix
        return prefix


def _reason_extensions(reason: CRLReason) -> bytes:
    extension = {"extn_id": "crl_reason", "critical": False, "extn_value": int(reason)}
    return bytes(asn1_crl.CRLEntryExtensions([extension]).dump())


# 'unspecified' is never written: §5.3.1 says to leave the reasonCode out rather than use it.
REASON_EXTENSIONS: dict[int | None, bytes] = {None: b"", 0: b""} | {
    int(reason): _reason_extensions(reason) for reason in CRLReason if reason is not CRLReason.UNSPECIFIED
}


def encode_entries(revoked: Iterable[RevokedEntry]) -> bytearray:
    """The entries for the (serial, revocation time, reason code) of ``revoked``, back to back.

    ``revoked`` is read once. ValueError for a serial that is not positive or over 159 bits, a time
    before 1950 or a reason that is no CRLReason code.
    """
    der, time = bytearray(), TimeEncoder()
    for serial, when, reason in revoked:
        if not 0 < serial < SERIAL_LIMIT:
            raise ValueError(f"serial {serial} is not positive or has more than 159 bits")
        extensions = REASON_EXTENSIONS.get(reason)
        if extensions is None:
            raise ValueError(f"{reason} is not an RFC 5280 CRLReason code")
        number = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
        # A serial is at most 20 octets and an entry at most 53: both lengths take the short form.
        content = bytes((INTEGER, len(number))) + number + time(when) + extensions
        der += bytes((SEQUENCE, len(content)))
        der += content
    return der
