from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scep_server.ca.authority import CertificateAuthority, init_ca
from scep_server.ca.crl import build_crl, build_crl_der
from scep_server.ca.crl_entries import RevokedEntry
from scep_server.ca.material import authority_key_identifier
from scep_server.pki.reasons import CRLReason

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


def cryptography_crl(
    ca: CertificateAuthority, revoked: Iterable[RevokedEntry], crl_number: int, now: datetime, validity: timedelta
) -> x509.CertificateRevocationList:
    """The same CRL from cryptography's builder: the reference the assembled one must equal."""
    entries = []
    for serial, when, reason in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        if reason:
            entry = entry.add_extension(x509.CRLReason(CRLReason(reason).flag), critical=False)
        entries.append(entry.build())
    aki = authority_key_identifier(ca.ca_cert)
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=ca.ca_cert.subject, last_update=now, next_update=now + validity, revoked_certificates=entries,
        extensions=[x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(crl_number)),
                    x509.Extension(aki.oid, False, aki)],
    )
    return ca.ca_key.sign_crl(builder)


TIMES = st.datetimes(min_value=datetime(1950, 1, 2), max_value=datetime(9999, 1, 1), timezones=st.just(UTC))
ENTRIES = st.lists(
    st.tuples(st.integers(1, (1 << 159) - 1), TIMES, st.sampled_from([None, *(int(r) for r in CRLReason)])),
    max_size=30,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=ENTRIES,
    crl_number=st.integers(0, (1 << 159) - 1),
    now=st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(9990, 1, 1), timezones=st.just(UTC)),
    validity=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=3650)),
)
def test_crl_is_what_cryptography_builds(
    ca: CertificateAuthority, entries: list[RevokedEntry], crl_number: int, now: datetime, validity: timedelta
) -> None:
    der = build_crl_der(ca, iter(entries), crl_number=crl_number, now=now, validity=validity)
    crl = x509.load_der_x509_crl(der)
    reference = cryptography_crl(ca, entries, crl_number, now, validity)
    assert crl.tbs_certlist_bytes == reference.tbs_certlist_bytes
    assert crl.signature_algorithm_oid == reference.signature_algorithm_oid
    outer, tbs = (asn1_crl.CertificateList.load(d) for d in (der, reference.public_bytes(Encoding.DER)))
    assert outer["signature_algorithm"].dump() == tbs["signature_algorithm"].dump()
    assert crl.is_signature_valid(ca.ca_cert.public_key())  # type: ignore[arg-type]
    assert [(r.serial_number, r.revocation_date_utc) for r in crl] == [
        (serial, when.replace(microsecond=0)) for serial, when, _ in entries
    ]


@pytest.mark.parametrize(
    ("now", "this_update", "next_update"),
    [
        (datetime(2049, 12, 31, 12, tzinfo=UTC), "utc_time", "general_time"),
        (datetime(2050, 1, 1, tzinfo=UTC), "general_time", "general_time"),
        (datetime(2049, 12, 30, tzinfo=UTC), "utc_time", "utc_time"),
    ],
)
def test_crl_times_switch_to_generalized_time_in_2050(
    ca: CertificateAuthority, now: datetime, this_update: str, next_update: str
) -> None:
    der = build_crl_der(ca, [(1, now, None)], crl_number=1, now=now, validity=timedelta(days=1))
    tbs = asn1_crl.CertificateList.load(der)["tbs_cert_list"]
    assert (tbs["this_update"].name, tbs["next_update"].name) == (this_update, next_update)
    assert tbs["revoked_certificates"][0]["revocation_date"].name == this_update
    assert tbs["next_update"].native == now + timedelta(days=1)


def test_crl_without_entries_leaves_the_list_out(ca: CertificateAuthority) -> None:
    der = build_crl_der(ca, [], crl_number=3, now=NOW, validity=timedelta(days=1))
    assert asn1_crl.CertificateList.load(der)["tbs_cert_list"]["revoked_certificates"].native is None
    assert x509.load_der_x509_crl(der).tbs_certlist_bytes == cryptography_crl(
        ca, [], 3, NOW, timedelta(days=1)
    ).tbs_certlist_bytes


def test_crl_times_drop_fractions_and_take_naive_as_utc(ca: CertificateAuthority) -> None:
    now = datetime(2030, 5, 6, 7, 8, 9, 123456)
    crl = build_crl(ca, [(9, now, 1)], crl_number=1, now=now, validity=timedelta(hours=2))
    whole = now.replace(microsecond=0, tzinfo=UTC)
    assert crl.last_update_utc == whole and crl.next_update_utc == whole + timedelta(hours=2)
    assert crl[0].revocation_date_utc == whole


def test_crl_rejects_times_before_1950(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="1950"):
        build_crl(ca, [], crl_number=1, now=datetime(1949, 12, 31, tzinfo=UTC), validity=timedelta(days=1))
