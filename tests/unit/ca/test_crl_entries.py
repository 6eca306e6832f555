"""The hand-written DER of CRL entries, checked against asn1crypto's encoding of the same entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from asn1crypto import core
from asn1crypto import crl as asn1_crl
from hypothesis import given
from hypothesis import strategies as st

from scep_server.ca.crl_entries import REASON_EXTENSIONS, RevokedEntry, encode_entries, header
from scep_server.pki.reasons import CRLReason

SERIALS = st.integers(1, (1 << 159) - 1)
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))])
# Local bounds a day inside 1950..9999, so that every offset above stays in range in UTC.
TIMES = st.datetimes(
    min_value=datetime(1950, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.one_of(st.none(), ZONES)
)
REASONS = st.sampled_from([None, *(int(reason) for reason in CRLReason)])
ENTRIES = st.tuples(SERIALS, TIMES, REASONS)


def asn1crypto_entry(serial: int, when: datetime, reason: int | None) -> bytes:
    """The same entry encoded by asn1crypto: the reference the hand-written DER must equal."""
    utc = (when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)).replace(microsecond=0)
    kind = "utc_time" if utc.year < 2050 else "general_time"
    entry: dict[str, object] = {"user_certificate": serial, "revocation_date": {kind: utc}}
    if reason:
        entry["crl_entry_extensions"] = [{"extn_id": "crl_reason", "critical": False, "extn_value": reason}]
    return bytes(asn1_crl.RevokedCertificate(entry).dump(force=True))


@given(ENTRIES)
def test_an_entry_is_what_asn1crypto_encodes(entry: RevokedEntry) -> None:
    assert bytes(encode_entries([entry])) == asn1crypto_entry(*entry)


@given(st.lists(ENTRIES, max_size=20))
def test_entries_follow_each_other_in_order(entries: list[RevokedEntry]) -> None:
    assert bytes(encode_entries(iter(entries))) == b"".join(asn1crypto_entry(*entry) for entry in entries)


@given(ENTRIES)
def test_an_entry_parses_back_with_its_values(entry: RevokedEntry) -> None:
    serial, when, reason = entry
    parsed = asn1_crl.RevokedCertificate.load(bytes(encode_entries([entry])))
    assert parsed["user_certificate"].native == serial
    utc = when.replace(tzinfo=UTC) if when.tzinfo is None else when
    assert parsed["revocation_date"].native == utc.replace(microsecond=0)
    # RFC 5280 §5.1.2.6 (by §4.1.2.5): UTCTime through 2049, GeneralizedTime from 2050.
    assert parsed["revocation_date"].name == ("utc_time" if utc.astimezone(UTC).year < 2050 else "general_time")
    extensions = parsed["crl_entry_extensions"].native or []
    assert [ext["extn_value"] for ext in extensions] == ([] if not reason else [CRLReason(reason).name.lower()])


@pytest.mark.parametrize(
    ("when", "encoded"),
    [
        (datetime(2049, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), b"\x17\x0d491231235959Z"),
        (datetime(2050, 1, 1, tzinfo=UTC), b"\x18\x0f20500101000000Z"),
        (datetime(2050, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))), b"\x17\x0d491231233000Z"),
        (datetime(1950, 1, 1), b"\x17\x0d500101000000Z"),
        (datetime(1999, 12, 31, 12, 0, 1), b"\x17\x0d991231120001Z"),
    ],
)
def test_the_year_2050_boundary_and_utc(when: datetime, encoded: bytes) -> None:
    assert encoded in encode_entries([(1, when, None)])


@given(st.integers(0, 1 << 17))
def test_lengths_short_and_long_form(length: int) -> None:
    content = bytes(length)
    assert header(0x04, length) + content == core.OctetString(content).dump()


def test_unspecified_and_none_carry_no_reason_code() -> None:
    assert REASON_EXTENSIONS[0] == REASON_EXTENSIONS[None] == b""
    assert encode_entries([(5, datetime(2030, 1, 1, tzinfo=UTC), 0)]) == encode_entries(
        [(5, datetime(2030, 1, 1, tzinfo=UTC), None)]
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ((0, datetime(2030, 1, 1, tzinfo=UTC), None), "serial 0"),
        ((-5, datetime(2030, 1, 1, tzinfo=UTC), None), "serial -5"),
        ((1 << 159, datetime(2030, 1, 1, tzinfo=UTC), None), "159 bits"),
        ((1, datetime(1949, 12, 31, 23, 59, tzinfo=UTC), None), "before 1950"),
        ((1, datetime(2030, 1, 1, tzinfo=UTC), 7), "7 is not an RFC 5280 CRLReason"),
        ((1, datetime(2030, 1, 1, tzinfo=UTC), 11), "11 is not an RFC 5280 CRLReason"),
    ],
)
def test_entries_that_cannot_be_listed(entry: RevokedEntry, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_entries([entry])
