"""The operators' certificate queries: what the CLI and the admin API list, show, search and revoke."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scep_server.pki.reasons import CRLReason
from scep_server.service.certificates import (
    STATUSES,
    CertificateQueries,
    NoSuchCertificate,
    Revoked,
    WasRevoked,
    describe,
    parse_serial,
    text_rows,
)
from scep_server.service.revocation import RevocationService, UnknownRevocationReason
from scep_server.store import CertificateRecord, CertStatus, NewCertificate, Store

from .conftest import CountingCache

ISSUER = "CN=Unit Test CA"
NOT_BEFORE = datetime(2026, 1, 1, tzinfo=UTC)


def _store_certificate(store: Store, serial: int, subject: str = "CN=device", profile: str = "unit") -> None:
    store.record_issued(profile=profile, transaction_id=None, certificate=NewCertificate(
        serial=serial, issuer=ISSUER, subject=subject, sans=("dns:device.example",), not_before=NOT_BEFORE,
        not_after=NOT_BEFORE + timedelta(days=365), profile=profile, transaction_id=f"tx-{serial}",
        requester_ip="192.0.2.9", der=b"\x30\x00", sha1_thumbprint="aa" * 20, sha256_thumbprint="bb" * 32,
    ))


@pytest.fixture
def queries(store: Store, cache: CountingCache) -> CertificateQueries:
    return CertificateQueries(store, RevocationService(store, issuer=ISSUER, caches=[cache]), issuer=ISSUER)


def test_list_show_and_search(queries: CertificateQueries, store: Store) -> None:
    _store_certificate(store, 0x10, "CN=one")
    _store_certificate(store, 0x11, "CN=two", profile="other")
    assert [r.serial for r in queries.page()] == [0x11, 0x10]
    assert [r.serial for r in queries.page(profile="other")] == [0x11]
    assert [r.serial for r in queries.page(limit=1)] == [0x11]
    assert [r.serial for r in queries.search("CN=one")] == [0x10]
    shown = queries.show(0x10)
    assert shown is not None and shown.subject == "CN=one"
    assert queries.show(0x99) is None


def test_status_filter_takes_the_status_names(queries: CertificateQueries, store: Store) -> None:
    _store_certificate(store, 0x20)
    assert STATUSES == ("valid", "revoked")
    assert [r.serial for r in queries.page(status="valid")] == [0x20]
    assert queries.page(status="revoked") == []
    with pytest.raises(ValueError):
        queries.page(status="odd")


def test_revoke_answers_with_a_value(queries: CertificateQueries, store: Store, cache: CountingCache) -> None:
    _store_certificate(store, 0x30)
    answer = queries.revoke(0x30, reason="keyCompromise")
    assert isinstance(answer, Revoked) and answer.certificate.status is CertStatus.REVOKED
    assert answer.certificate.revocation_reason == CRLReason.KEY_COMPROMISE and cache.invalidations == 1
    again = queries.revoke(0x30, reason=CRLReason.SUPERSEDED)
    assert isinstance(again, WasRevoked) and again.certificate.revocation_reason == CRLReason.KEY_COMPROMISE
    assert queries.revoke(0x31, reason="unspecified") == NoSuchCertificate(0x31)
    with pytest.raises(UnknownRevocationReason):
        queries.revoke(0x30, reason="removeFromCRL")


def test_search_needs_an_issuer(store: Store) -> None:
    anywhere = CertificateQueries(store, RevocationService(store, issuer=ISSUER))
    with pytest.raises(ValueError):
        anywhere.search("CN=one")


@pytest.mark.parametrize(("text", "serial"), [("1f", 0x1F), ("0x1F", 0x1F), ("01:ab", 0x1AB)])
def test_parse_serial(text: str, serial: int) -> None:
    assert parse_serial(text) == serial


@pytest.mark.parametrize("text", ["zz", "", "-1", "0", "ff" * 21])
def test_parse_serial_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_serial(text)


def _record(store: Store, serial: int) -> CertificateRecord:
    record = store.get_certificate(serial)
    assert record is not None
    return record


def test_describe_is_json_ready_and_keeps_the_requester_out(store: Store) -> None:
    _store_certificate(store, 0xABC)
    described = describe(_record(store, 0xABC))
    assert described["serial"] == "abc" and described["sans"] == ["dns:device.example"]
    assert described["status"] == "valid" and described["not_before"] == NOT_BEFORE.isoformat()
    assert described["revoked_at"] is None and described["revocation_reason"] is None
    assert "requester_ip" not in described and all(isinstance(k, str) for k in described)


def test_text_rows_label_the_same_fields_for_a_terminal(queries: CertificateQueries, store: Store) -> None:
    _store_certificate(store, 0xDEF)
    rows = dict(text_rows(_record(store, 0xDEF)))
    assert (rows["serial"], rows["SANs"], rows["requester"], rows["transaction"]) == (
        "def", "dns:device.example", "192.0.2.9", "tx-3567")
    assert "revoked at" not in rows
    queries.revoke(0xDEF, reason="superseded")
    revoked = text_rows(_record(store, 0xDEF))
    assert revoked[-2:] == [("revoked at", revoked[-2][1]), ("reason", "4")] and revoked[-2][1] != "-"
    assert [label for label, _ in revoked][:2] == ["serial", "status"]
