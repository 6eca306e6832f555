from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from scep_server.ca.authority import CertificateAuthority, init_ca
from scep_server.ca.crl import build_crl

from .support import CA_KINDS, NOW


@pytest.fixture(scope="module", params=list(CA_KINDS))
def ca(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return init_ca(tmp_path_factory.mktemp("ca") / "ca", CA_KINDS[request.param], None, now=NOW)


def entries() -> Iterator[tuple[int, datetime, int | None]]:
    yield 0x1234, NOW - timedelta(days=3), None
    yield 2**158 + 5, NOW - timedelta(days=2), 0
    yield 77, NOW - timedelta(days=1), 1
    yield 78, NOW - timedelta(hours=1), 4
    yield 79, NOW - timedelta(minutes=1), 6


def test_crl_is_signed_by_the_ca(ca: CertificateAuthority) -> None:
    crl = build_crl(ca, entries(), crl_number=42, now=NOW, validity=timedelta(days=7))
    assert crl.is_signature_valid(ca.ca_cert.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.ca_cert.subject
    assert crl.last_update_utc == NOW and crl.next_update_utc == NOW + timedelta(days=7)
    expected_hash = "sha384" if ca.ca_cert.signature_hash_algorithm.name == "sha384" else "sha256"  # type: ignore[union-attr]
    assert crl.signature_hash_algorithm is not None and crl.signature_hash_algorithm.name == expected_hash


def test_crl_extensions(ca: CertificateAuthority) -> None:
    crl = build_crl(ca, iter(()), crl_number=7, now=NOW, validity=timedelta(hours=1))
    number = crl.extensions.get_extension_for_class(x509.CRLNumber)
    assert number.value.crl_number == 7 and not number.critical
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert len(crl) == 0


def test_crl_entries_and_reasons(ca: CertificateAuthority) -> None:
    crl = build_crl(ca, entries(), crl_number=1, now=NOW, validity=timedelta(days=1))
    reasons: dict[int, x509.ReasonFlags | None] = {}
    for entry in crl:
        try:
            reasons[entry.serial_number] = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            reasons[entry.serial_number] = None
    assert reasons == {
        0x1234: None,
        2**158 + 5: None,  # 'unspecified' is left out (RFC 5280 §5.3.1)
        77: x509.ReasonFlags.key_compromise,
        78: x509.ReasonFlags.superseded,
        79: x509.ReasonFlags.certificate_hold,
    }
    revoked = crl.get_revoked_certificate_by_serial_number(78)
    assert revoked is not None and revoked.revocation_date_utc == NOW - timedelta(hours=1)


def test_crl_reads_the_iterator_once(ca: CertificateAuthority) -> None:
    source = entries()
    crl = build_crl(ca, source, crl_number=1, now=NOW, validity=timedelta(days=1))
    assert len(crl) == 5
    assert next(source, None) is None


def test_crl_rejects_unknown_reasons(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="7 is not an RFC 5280 CRLReason"):
        build_crl(ca, [(1, NOW, 7)], crl_number=1, now=NOW, validity=timedelta(days=1))


@pytest.mark.parametrize(("number", "validity"), [(-1, timedelta(days=1)), (1, timedelta(0))])
def test_crl_rejects_misuse(ca: CertificateAuthority, number: int, validity: timedelta) -> None:
    with pytest.raises(ValueError):
        build_crl(ca, [], crl_number=number, now=NOW, validity=validity)


def test_large_crl(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca", CA_KINDS["p256"], None, now=NOW)
    many = ((serial, NOW, 1) for serial in range(1, 20_001))
    crl = build_crl(ca, many, crl_number=1, now=NOW, validity=timedelta(days=1))
    assert len(crl) == 20_000
