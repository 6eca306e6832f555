"""The CRL publisher (RFC 5280 §5) and the revocation service behind it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scep_server.errors import ScepServerError
from scep_server.pki.reasons import CRLReason
from scep_server.scep import client
from scep_server.scep.types import PKIStatus
from scep_server.service.publishing import CrlCache, RevocationWatch
from scep_server.service.revocation import REASON_NAMES, RevocationService, UnknownRevocationReason, revocation_reason
from scep_server.store import AlreadyRevoked, CertificateNotFound, CertStatus
from tests.support.clocks import FakeClock

from .conftest import Device, ScepTestServer

CRL_VALIDITY = timedelta(hours=168)  # ca.crl_validity_hours default


def fetch(server: ScepTestServer, suffix: str = "crl") -> x509.CertificateRevocationList:
    response = server.http.get(f"/crl/test-ca.{suffix}")
    assert response.status_code == 200
    if suffix == "pem":
        assert response.mimetype == "application/x-pem-file"
        return x509.load_pem_x509_crl(response.data)
    assert response.mimetype == "application/pkix-crl"
    return x509.load_der_x509_crl(response.data)


def number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def reason_of(crl: x509.CertificateRevocationList, serial: int) -> x509.ReasonFlags | None:
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None, f"{serial:x} is not on the CRL"
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


def test_crl_is_signed_by_the_ca_with_number_aki_and_validity(server: ScepTestServer) -> None:
    crl = fetch(server)
    assert crl.is_signature_valid(server.ca.ca_cert.public_key())  # type: ignore[arg-type]
    assert crl.issuer == server.ca.ca_cert.subject and len(crl) == 0
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = server.ca.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert crl.next_update_utc is not None and crl.next_update_utc - crl.last_update_utc == CRL_VALIDITY
    pem = fetch(server, "pem")
    assert pem.public_bytes(Encoding.DER) == crl.public_bytes(Encoding.DER)  # the same cached CRL


def test_revocation_is_in_the_next_crl(server: ScepTestServer) -> None:
    cert = server.enroll(Device())
    before = fetch(server)
    assert fetch(server).public_bytes(Encoding.DER) == before.public_bytes(Encoding.DER)
    revoked_at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    server.runtime.revocations.revoke(cert.serial_number, reason="keyCompromise", revoked_at=revoked_at)
    after = fetch(server)
    assert number(after) > number(before)
    assert reason_of(after, cert.serial_number) is x509.ReasonFlags.key_compromise
    entry = after.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None and entry.revocation_date_utc == revoked_at


def test_get_crl_answers_with_the_published_crl(server: ScepTestServer) -> None:
    device = Device()
    cert = server.enroll(device)
    server.runtime.revocations.revoke(cert.serial_number, reason=CRLReason.SUPERSEDED)
    published = server.http.get("/crl/test-ca.crl").data
    built = client.build_get_crl(
        server.ca.ca_cert.subject, cert.serial_number,
        signer_cert=device.signer, signer_key=device.key, recipient=server.ca.ra_cert,
    )  # fmt: skip
    reply = server.send(built, device)
    assert reply.status is PKIStatus.SUCCESS
    assert [crl.public_bytes(Encoding.DER) for crl in reply.crls] == [published]


def test_a_burst_of_revocations_yields_one_new_crl(server: ScepTestServer) -> None:
    ticks = FakeClock(1000.0)
    store, ca = server.runtime.store, server.ca
    crls = CrlCache(
        ca, store, validity=CRL_VALIDITY, refresh=timedelta(hours=1),
        watch=RevocationWatch(store, clock=ticks), clock=ticks,
    )  # fmt: skip
    service = RevocationService(store, issuer=ca.issuer_name, caches=[crls])
    serials = [server.enroll(Device(common_name=f"burst-{i}")).serial_number for i in range(12)]
    assert crls.publish_due()  # the first one
    first = x509.load_der_x509_crl(crls.current_der())
    for serial in serials:
        service.revoke(serial, reason="cessationOfOperation")
        ticks.now += 0.05
    assert not crls.publish_due()  # still within the debounce window
    ticks.now += 1.0
    assert crls.publish_due()
    published = crls.current_der()
    crl = x509.load_der_x509_crl(published)
    assert number(crl) == number(first) + 1 and len(crl) == len(serials)
    assert not crls.publish_due()
    assert crls.current_der() == published
    ticks.now += timedelta(hours=1).total_seconds()
    assert crls.publish_due()  # the schedule
    assert number(x509.load_der_x509_crl(crls.current_der())) == number(crl) + 1


def test_current_crl_is_never_stale_inside_the_debounce_window(server: ScepTestServer) -> None:
    ticks = FakeClock(1000.0)
    store, ca = server.runtime.store, server.ca
    crls = CrlCache(
        ca, store, validity=CRL_VALIDITY, refresh=timedelta(hours=1),
        watch=RevocationWatch(store, clock=ticks), clock=ticks,
    )  # fmt: skip
    service = RevocationService(store, issuer=ca.issuer_name, caches=[crls])
    crls.current_der()
    for index in range(3):
        serial = server.enroll(Device(common_name=f"now-{index}")).serial_number
        service.revoke(serial, reason="affiliationChanged")
        assert x509.load_der_x509_crl(crls.current_der()).get_revoked_certificate_by_serial_number(serial) is not None


def test_revocation_elsewhere_is_noticed_within_the_check_interval(
    server: ScepTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = FakeClock(1000.0)
    store, ca = server.runtime.store, server.ca
    crls = CrlCache(
        ca, store, validity=CRL_VALIDITY, refresh=timedelta(hours=1),
        watch=RevocationWatch(store, clock=ticks), clock=ticks,
    )  # fmt: skip
    cert = server.enroll(Device())
    crls.current_der()
    counts: list[CertStatus | None] = []
    count_certificates = store.count_certificates

    def counting(*, status: CertStatus | None = None) -> int:
        counts.append(status)
        return count_certificates(status=status)

    monkeypatch.setattr(store, "count_certificates", counting)
    RevocationService(store, issuer=ca.issuer_name).revoke(cert.serial_number, reason="keyCompromise")  # tells no cache
    for _ in range(5):
        ticks.now += 0.15
        crls.current_der()
    assert counts == []  # one cheap count a second at most
    ticks.now += 0.3
    crl = x509.load_der_x509_crl(crls.current_der())
    assert counts == [CertStatus.REVOKED]
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


# --- the revocation service ------------------------------------------------------------------------


def test_revoking_twice_is_a_conflict_and_adds_no_entry(server: ScepTestServer) -> None:
    cert = server.enroll(Device())
    record = server.runtime.revocations.revoke(cert.serial_number, reason="superseded")
    assert record.status is CertStatus.REVOKED and record.revocation_reason == 4
    with pytest.raises(AlreadyRevoked) as raised:
        server.runtime.revocations.revoke(cert.serial_number, reason="keyCompromise")
    assert raised.value.certificate.revocation_reason == 4
    crl = fetch(server)
    assert len(crl) == 1 and reason_of(crl, cert.serial_number) is x509.ReasonFlags.superseded


def test_unknown_serial_is_not_found(server: ScepTestServer) -> None:
    with pytest.raises(CertificateNotFound):
        server.runtime.revocations.revoke(0x1234, reason="keyCompromise")
    cert = server.enroll(Device())
    with pytest.raises(CertificateNotFound):
        server.runtime.revocations.revoke(cert.serial_number, reason="keyCompromise", issuer="CN=Someone Else")


@pytest.mark.parametrize("name", REASON_NAMES)
def test_every_reason_name_revokes(server: ScepTestServer, name: str) -> None:
    cert = server.enroll(Device())
    record = server.runtime.revocations.revoke(cert.serial_number, reason=name)
    reason = revocation_reason(name)
    assert record.revocation_reason == int(reason) and reason.rfc_name == name
    expected = None if reason is CRLReason.UNSPECIFIED else x509.ReasonFlags[_flag_name(name)]
    assert reason_of(fetch(server), cert.serial_number) is expected


def _flag_name(rfc_name: str) -> str:
    return {"cACompromise": "ca_compromise", "aACompromise": "aa_compromise"}.get(
        rfc_name, "".join(f"_{c.lower()}" if c.isupper() else c for c in rfc_name)
    )


def test_reason_names_are_read_leniently_and_remove_from_crl_is_refused() -> None:
    assert revocation_reason("key_compromise") is CRLReason.KEY_COMPROMISE
    assert revocation_reason(" CA-COMPROMISE ") is CRLReason.CA_COMPROMISE
    with pytest.raises(UnknownRevocationReason, match="delta CRLs") as raised:
        revocation_reason("removeFromCRL")
    assert isinstance(raised.value, ScepServerError)
    with pytest.raises(UnknownRevocationReason, match="keyCompromise"):
        revocation_reason("stolen")


def test_issuer_and_time_are_checked(server: ScepTestServer) -> None:
    cert = server.enroll(Device())
    service = server.runtime.revocations
    with pytest.raises(ValueError, match="timezone"):
        service.revoke(cert.serial_number, reason="superseded", revoked_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="future"):
        service.revoke(cert.serial_number, reason="superseded", revoked_at=datetime.now(UTC) + timedelta(hours=1))
    spaced = "CN = Test Issuing CA, O = scep-server tests"  # as openssl prints names
    assert service.revoke(cert.serial_number, reason="superseded", issuer=spaced).status is CertStatus.REVOKED
    other = server.enroll(Device())
    assert service.revoke(other.serial_number, reason="superseded", issuer=server.ca.ca_cert.subject).revoked_at
