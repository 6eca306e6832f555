"""Certificate search on SQLite and PostgreSQL: the store's serial, thumbprint, SAN, device and keyset
filters, and the report that validates a query and pages through the matches by cursor."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from scep_server.service.paging import decode_cursor, encode_cursor
from scep_server.service.reports import CertificateQuery, CertificateSearch, Reports, ReportStatus
from scep_server.store import CertificateRecord, NewCertificate, Store, serial_hex
from scep_server.store.reports import CertificateFilter, CertificateOrder
from scep_server.store.tables import certificates
from tests.support.servers import postgres_database, postgres_url  # noqa: F401 (fixtures)

ISSUER = "CN=Search CA,O=scep-server"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DEVICE = "6f1a2b3c-0000-4000-8000-000000000001"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated store, on a SQLite file or in a PostgreSQL schema of its own."""
    sqlite = f"sqlite:///{tmp_path / 'search.db'}"
    url: str = sqlite if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    with Store.open(url) as opened:
        opened.migrate()
        yield opened


@pytest.fixture
def reports(store: Store) -> Reports:
    return Reports(store, now=lambda: NOW)


def _issue(store: Store, serial: int, *, issued_ago: timedelta = timedelta(0), **overrides: Any) -> None:
    values: dict[str, Any] = {
        "serial": serial, "issuer": ISSUER, "subject": f"CN=device-{serial:x}",
        "sans": (f"dns:device-{serial:x}.example",), "not_before": NOW - timedelta(days=1),
        "not_after": NOW + timedelta(days=365), "profile": "default", "transaction_id": None,
        "requester_ip": None, "der": b"\x30\x82" + serial.to_bytes(21, "big"),
        "sha1_thumbprint": f"{serial:040X}", "sha256_thumbprint": f"{serial:064X}",
    } | overrides
    store.record_issued(profile=values["profile"], transaction_id=None, certificate=NewCertificate(**values))
    with store.engine.begin() as conn:
        conn.execute(update(certificates).where(certificates.c.serial_hex == serial_hex(serial))
                     .values(issued_at=NOW - issued_ago))


def _found(store: Store, **wanted: Any) -> list[int]:
    return [record.serial for record in store.search_certificates(CertificateFilter(**wanted))]


def _page(reports: Reports, **query: Any) -> list[int]:
    return [record.serial for record in reports.certificate_page(CertificateQuery(**query)).items]


# -- the store's filters ------------------------------------------------------------------------------


def test_a_serial_matches_exactly_not_as_a_prefix(store: Store) -> None:
    for serial in (0x1A, 0x1A0, 0x11A):
        _issue(store, serial, issued_ago=timedelta(minutes=serial))
    assert _found(store, serial="1a") == [0x1A]
    assert _found(store, serial="1a0") == [0x1A0]
    assert _found(store, serial="ff") == []


def test_a_thumbprint_matches_its_own_column_in_either_case(store: Store) -> None:
    _issue(store, 1, sha1_thumbprint="AB" * 20, sha256_thumbprint="CD" * 32)
    _issue(store, 2, sha1_thumbprint="CD" * 20, sha256_thumbprint="AB" * 32, issued_ago=timedelta(minutes=1))
    assert _found(store, thumbprint="ab" * 20) == [1]  # SHA-1 length: the SHA-1 column only
    assert _found(store, thumbprint="AB" * 32) == [2]  # SHA-256 length: the SHA-256 column only
    assert _found(store, thumbprint="ee" * 20) == []
    with pytest.raises(ValueError, match="thumbprint"):
        _found(store, thumbprint="ab" * 10)


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("LAPTOP", [1, 2]),  # any case, any SAN of the certificate
        ("dns:laptop-01", [1]),
        ("email:", [2]),
        ("100%", [3]),  # % is itself
        ("a_b", [4]),  # _ is itself
        ('quo"te', [5]),  # the quote itself, not the array's
        ("back\\slash", [6]),
        ("Émile", [7]),  # beyond ASCII, as stored
        ('example","email', []),  # never across two SANs
        ("nothing like it", []),
    ],
)
def test_a_san_search_is_a_literal_substring_of_one_san(store: Store, search: str, expected: list[int]) -> None:
    sans = {
        1: ("dns:laptop-01.example", "uri:IntuneDeviceId://x"),
        2: ("dns:my.Laptop.example", "email:a@example.com"),
        3: ("dns:100%.example",),
        4: ("dns:a_b.example",),
        5: ('upn:quo"te@example.com',),
        6: ("upn:back\\slash@example.com",),
        7: ("upn:Émile@example.com",),
        8: ("dns:axb.example", "dns:1000.example"),  # what a_b and 100% would match as LIKE patterns
    }
    for serial, names in sans.items():
        _issue(store, serial, sans=names, issued_ago=timedelta(minutes=serial))
    assert _found(store, san_contains=search) == expected


def test_a_device_id_matches_the_whole_intune_device_uri_in_any_case(store: Store) -> None:
    _issue(store, 1, sans=("dns:pc.example", f"uri:IntuneDeviceId://{DEVICE}"))
    _issue(store, 2, sans=(f"uri:IntuneDeviceId://{DEVICE}-2",), issued_ago=timedelta(minutes=1))  # longer id
    _issue(store, 3, sans=(f"dns:{DEVICE}.example",), issued_ago=timedelta(minutes=2))  # not the URI
    _issue(store, 4, sans=("uri:IntuneDeviceId://a%b",), issued_ago=timedelta(minutes=3))
    _issue(store, 5, sans=("uri:IntuneDeviceId://axxb",), issued_ago=timedelta(minutes=4))
    assert _found(store, device_id=DEVICE) == [1]
    assert _found(store, device_id=DEVICE.upper()) == [1]
    assert _found(store, device_id=DEVICE[:8]) == []
    assert _found(store, device_id="a%b") == [4]


def test_a_device_id_finds_the_certificates_bound_to_that_device_of_any_kind(store: Store) -> None:
    entra = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    _issue(store, 1, sans=("dns:laptop.example",), device_id=entra, device_id_kind="entra")  # from an OID
    _issue(store, 2, sans=(f"uri:IntuneDeviceId://{DEVICE}",), device_id=DEVICE, device_id_kind="intune",
           issued_ago=timedelta(minutes=1))
    _issue(store, 3, sans=("dns:other.example",), device_id=DEVICE.replace("0", "1"), device_id_kind="intune",
           issued_ago=timedelta(minutes=2))
    assert _found(store, device_id=entra.upper()) == [1]
    assert _found(store, device_id=DEVICE) == [2]


def test_before_keeps_the_rows_after_the_cursor_breaking_time_ties_by_id(store: Store) -> None:
    for serial in (1, 2, 3, 4):
        _issue(store, serial, issued_ago=timedelta(hours=1 if serial < 4 else 2))
    keyed = store.reports.search_keyed_certificates(CertificateFilter())
    assert [row.record.serial for row in keyed] == [3, 2, 1, 4]
    second = keyed[1]
    assert _found(store, before=(second.record.issued_at, second.row_id)) == [1, 4]
    with pytest.raises(ValueError, match="newest first"):
        _found(store, before=(NOW, 1), order=CertificateOrder.EXPIRING_FIRST)


# -- the report: validation and paging ----------------------------------------------------------------


def _all_pages(reports: Reports, limit: int, **query: Any) -> list[list[int]]:
    pages, cursor = [], None
    while True:
        page = reports.certificate_page(CertificateQuery(cursor=cursor, limit=limit, **query))
        pages.append([record.serial for record in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def test_paging_visits_every_match_once_in_order(store: Store, reports: Reports) -> None:
    for serial in range(1, 24):
        _issue(store, serial, issued_ago=timedelta(minutes=serial // 3))  # three at a time share a time
    everything = _page(reports, limit=1000)
    assert len(everything) == 23
    pages = _all_pages(reports, 5)
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert [serial for page in pages for serial in page] == everything


def test_paging_with_a_filter_stays_within_it(store: Store, reports: Reports) -> None:
    for serial in range(1, 31):
        _issue(store, serial, issued_ago=timedelta(minutes=serial), profile="wifi" if serial % 2 else "default")
    pages = _all_pages(reports, 4, profile="wifi")
    assert len(pages) == 4
    assert [serial for page in pages for serial in page] == list(range(1, 31, 2))


def test_a_certificate_issued_while_paging_neither_shifts_nor_repeats_rows(store: Store, reports: Reports) -> None:
    for serial in range(1, 10):
        _issue(store, serial, issued_ago=timedelta(minutes=serial))
    first = reports.certificate_page(CertificateQuery(limit=4))
    _issue(store, 100)  # the newest now: before the cursor's place
    assert first.next_cursor is not None
    second = reports.certificate_page(CertificateQuery(limit=4, cursor=first.next_cursor))
    assert [r.serial for r in first.items] == [1, 2, 3, 4]
    assert [r.serial for r in second.items] == [5, 6, 7, 8]


def test_an_exactly_full_last_page_has_no_cursor(store: Store, reports: Reports) -> None:
    for serial in range(1, 7):
        _issue(store, serial, issued_ago=timedelta(minutes=serial))
    assert [len(page) for page in _all_pages(reports, 3)] == [3, 3]


def _revoke(store: Store, serial: int) -> None:
    store.revoke(serial, ISSUER, reason=1, revoked_at=NOW)


@pytest.fixture
def catalogue(store: Store) -> Store:
    """Six certificates that each filter tells apart from the rest."""
    _issue(store, 0x11, subject="CN=Alice Laptop", sans=("upn:alice@contoso.com", f"uri:IntuneDeviceId://{DEVICE}"))
    _issue(store, 0x22, subject="CN=bob-phone", profile="wifi", issued_ago=timedelta(days=2))
    _issue(store, 0x33, subject="CN=printer", not_after=NOW - timedelta(days=1), issued_ago=timedelta(days=400))
    _issue(store, 0x44, subject="CN=kiosk", not_after=NOW + timedelta(days=10), issued_ago=timedelta(days=5))
    _issue(store, 0x55, subject="CN=old laptop", issued_ago=timedelta(days=30))
    _issue(store, 0xABCDEF, subject="CN=server", issued_ago=timedelta(days=60))
    _revoke(store, 0x55)
    return store


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, [0x11, 0x22, 0x44, 0x55, 0xABCDEF, 0x33]),
        ({"serial": 0x44}, [0x44]),
        ({"serial": "0xAB:CD:EF"}, [0xABCDEF]),
        ({"serial": "ab cd ef"}, [0xABCDEF]),
        ({"subject": "LAPTOP"}, [0x11, 0x55]),
        ({"san": "Contoso"}, [0x11]),
        ({"thumbprint": f"{0x22:040x}"}, [0x22]),
        ({"thumbprint": ":".join(f"{0x22:064X}"[i:i + 2] for i in range(0, 64, 2))}, [0x22]),
        ({"profile": "wifi"}, [0x22]),
        ({"status": ReportStatus.VALID}, [0x11, 0x22, 0x44, 0xABCDEF]),
        ({"status": "revoked"}, [0x55]),
        ({"status": ReportStatus.EXPIRED}, [0x33]),
        ({"issued_since": NOW - timedelta(days=5)}, [0x11, 0x22, 0x44]),
        ({"issued_until": NOW - timedelta(days=5)}, [0x55, 0xABCDEF, 0x33]),
        ({"issued_since": NOW - timedelta(days=31), "issued_until": NOW - timedelta(days=2)}, [0x44, 0x55]),
        ({"expires_before": NOW + timedelta(days=30)}, [0x44, 0x33]),
        ({"expires_before": NOW + timedelta(days=30), "status": "valid"}, [0x44]),
        ({"expires_before": NOW + timedelta(days=30), "status": "expired"}, [0x33]),
        ({"device_id": DEVICE.upper()}, [0x11]),
        ({"subject": "laptop", "status": "valid"}, [0x11]),
        ({"subject": "laptop", "profile": "wifi"}, []),
    ],
)
def test_each_filter_narrows_to_its_certificates(
    catalogue: Store, reports: Reports, query: dict[str, Any], expected: list[int]
) -> None:
    assert _page(reports, **query) == expected


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"thumbprint": "ab" * 19}, "thumbprint"),
        ({"thumbprint": "zz" * 20}, "thumbprint"),
        ({"thumbprint": "ab" * 20 + " "}, None),  # surrounding spaces are trimmed: accepted
        ({"thumbprint": "ab " * 20}, "thumbprint"),
        ({"serial": "xyz"}, "serial"),
        ({"serial": "00"}, "serial"),
        ({"serial": 0}, "serial"),
        ({"serial": -1}, "serial"),
        ({"serial": 1 << 160}, "serial"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"cursor": "junk"}, "cursor"),
        ({"status": "lost"}, "status"),
        ({"issued_since": datetime(2026, 1, 1)}, "issued_since"),
        ({"expires_before": datetime(2026, 1, 1)}, "expires_before"),
        ({"issued_since": NOW, "issued_until": NOW}, "issued_since"),
        ({"device_id": "  "}, "device_id"),
        ({"subject": "x" * 1025}, "subject"),
        ({"san": "x" * 1025}, "san"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(
    reports: Reports, query: dict[str, Any], parameter: str | None
) -> None:
    if parameter is None:
        assert reports.certificate_page(CertificateQuery(**query)).items == []
        return
    with pytest.raises(ValueError, match=parameter):
        reports.certificate_page(CertificateQuery(**query))


def test_a_cursor_names_the_last_row_of_its_page(catalogue: Store, reports: Reports) -> None:
    page = reports.certificate_page(CertificateQuery(limit=2))
    last: CertificateRecord = page.items[-1]
    assert page.next_cursor is not None
    moment, _ = decode_cursor(page.next_cursor)
    assert moment == last.issued_at
    # A cursor before every row gives an empty last page.
    assert reports.certificate_page(CertificateQuery(cursor=encode_cursor(NOW - timedelta(days=3650), 1))).items == []


def test_the_existing_report_still_answers(catalogue: Store, reports: Reports) -> None:
    page = reports.certificates(CertificateSearch(subject="laptop", limit=1))
    assert [record.serial for record in page.rows] == [0x11] and page.more
