"""CA rollover end to end (RFC 8894 §3.5.2, §4.7) on a running server, without a restart: stage → a
client reads GetNextCACert and verifies it → activate → new enrollments chain to the new CA, the old
CA keeps answering OCSP and publishing its CRL for what it issued, a RenewalReq signed by an old-CA
certificate gets a new-CA certificate, and a device that cached the old RA still enrolls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtensionOID

from scep_server.ca.generations import activate, stage_next
from scep_server.scep import client
from scep_server.scep.client.nextca import read_next_ca
from scep_server.scep.nextca import NEXT_CA_CERT
from scep_server.scep.types import PKIStatus
from tests.functional.conftest import CONFIG, Device, ScepTestServer, make_config, serving

PUBLIC = "http://pki.example.test"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ScepTestServer]:
    with serving(make_config(tmp_path, f"public_url: {PUBLIC}\n" + CONFIG)) as started:
        yield started


def caps(server: ScepTestServer) -> set[str]:
    return set(server.http.get("/scep?operation=GetCACaps").get_data(as_text=True).split())


def ca_certs(server: ScepTestServer) -> list[x509.Certificate]:
    response = server.http.get("/scep?operation=GetCACert")
    return client.parse_get_ca_cert(response.data, response.mimetype)


def enroll_to(
    server: ScepTestServer, device: Device, recipient: x509.Certificate, trusted: list[x509.Certificate], *,
    renewing: tuple[Device, x509.Certificate] | None = None,
) -> x509.Certificate:
    """Enroll ``device`` encrypting to ``recipient``; ``renewing``: a RenewalReq signed by that device's
    certificate (its new key is ``device``'s)."""
    signer_device, signer = renewing or (device, device.signer)
    built = client.build_pkcsreq(
        device.csr(), signer_cert=signer, signer_key=signer_device.key, recipient=recipient,
        renewal=renewing is not None,
    )
    response = server.post(built.der)
    assert response.status_code == 200, response.get_data(as_text=True)
    rep = client.parse_cert_rep(response.data, request=built, signer_key=signer_device.key,
                                signer_cert=signer, trusted_signers=trusted)
    assert rep.status is PKIStatus.SUCCESS, (rep.fail_info, rep.fail_info_text)
    return rep.certificate_for(device.key.public_key())


def ocsp_status(server: ScepTestServer, cert: x509.Certificate, issuer: x509.Certificate) -> ocsp.OCSPResponse:
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    response = server.http.post("/ocsp", data=request.public_bytes(serialization.Encoding.DER),
                                content_type="application/ocsp-request")
    answer = ocsp.load_der_ocsp_response(response.data)
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    responder = answer.certificates[0] if answer.certificates else issuer
    responder.verify_directly_issued_by(issuer)  # the issuing generation's delegated responder
    return answer


def crl(server: ScepTestServer, label: str, issuer: x509.Certificate) -> x509.CertificateRevocationList:
    response = server.http.get(f"/crl/{label}.crl")
    assert response.status_code == 200
    listed = x509.load_der_x509_crl(response.data)
    assert listed.issuer == issuer.subject and listed.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    return listed


def crl_url(cert: x509.Certificate) -> str:
    points = cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    return str(points[0].full_name[0].value)  # type: ignore[index]


def test_rollover_end_to_end(server: ScepTestServer) -> None:
    config = server.runtime.config
    old_ca, old_ra = server.ca.ca_cert, server.ca.ra_cert
    assert "GetNextCACert" not in caps(server)
    assert server.http.get("/scep?operation=GetNextCACert").status_code == 400
    old_device = Device(common_name="before-rollover")
    old_cert = server.enroll(old_device)
    assert crl_url(old_cert) == f"{PUBLIC}/crl/test-ca.crl"

    staged = stage_next(config.ca_dir, config.ca, None, cross_sign=True)
    server.runtime.authority.refresh()  # what every worker does by itself within a second
    assert "GetNextCACert" in caps(server)
    response = server.http.get("/scep?operation=GetNextCACert")
    assert response.status_code == 200 and response.mimetype == NEXT_CA_CERT
    for trusted in ([old_ca], [old_ra]):  # what a client holds from GetCACert: either verifies the reply
        following = read_next_ca(response.data, trusted)
        assert following.ca == staged.ca.ca_cert and following.ra == staged.ca.ra_cert
    assert any(cert.issuer == old_ca.subject and cert.subject == staged.ca.ca_cert.subject
               for cert in following.chain), "the cross-signed certificate"
    assert ca_certs(server)[:2] == [old_ra, old_ca]  # staged, not active yet
    assert server.enroll(Device(common_name="still-old")).issuer == old_ca.subject

    activate(config.ca_dir, config.ca)
    server.runtime.authority.refresh()
    new_ca, new_ra = staged.ca.ca_cert, staged.ca.ra_cert
    assert ca_certs(server)[:2] == [new_ra, new_ca] and "GetNextCACert" not in caps(server)
    new_cert = enroll_to(server, Device(common_name="after-rollover"), new_ra, [new_ra])
    new_cert.verify_directly_issued_by(new_ca)
    assert crl_url(new_cert) == f"{PUBLIC}/crl/{staged.label}.crl"
    # A device that cached the old GetCACert: decrypted by the old RA, which signs the CertRep; the
    # certificate comes from the CA that issues now.
    cached = enroll_to(server, Device(common_name="cached-old-ra"), old_ra, [old_ra])
    cached.verify_directly_issued_by(new_ca)

    # The old CA still answers for what it issued: revoked by serial alone, on its own CRL, in OCSP.
    server.runtime.revocations.revoke(old_cert.serial_number, reason="keyCompromise")
    old_crl, new_crl = crl(server, "test-ca", old_ca), crl(server, staged.label, new_ca)
    assert old_crl.get_revoked_certificate_by_serial_number(old_cert.serial_number) is not None
    assert new_crl.get_revoked_certificate_by_serial_number(old_cert.serial_number) is None
    assert ocsp_status(server, old_cert, old_ca).certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert ocsp_status(server, new_cert, new_ca).certificate_status is ocsp.OCSPCertStatus.GOOD
    assert server.http.get(f"/ca/{staged.label}.crt").data == new_ca.public_bytes(serialization.Encoding.DER)
    assert server.http.get("/ca/test-ca.crt").data == old_ca.public_bytes(serialization.Encoding.DER)


def test_a_renewal_signed_by_an_old_ca_certificate_gets_a_new_ca_certificate(server: ScepTestServer) -> None:
    config = server.runtime.config
    device = Device(common_name="renewing-device")
    old_cert = server.enroll(device)
    staged = stage_next(config.ca_dir, config.ca, None)
    activate(config.ca_dir, config.ca)
    server.runtime.authority.refresh()
    new_key = Device(common_name="renewing-device")
    renewed = enroll_to(server, new_key, staged.ca.ra_cert, [staged.ca.ra_cert], renewing=(device, old_cert))
    renewed.verify_directly_issued_by(staged.ca.ca_cert)
    assert renewed.subject == old_cert.subject and renewed.serial_number != old_cert.serial_number


def test_a_scheduled_activation_switches_the_issuer_when_its_time_comes(server: ScepTestServer) -> None:
    from datetime import UTC, datetime, timedelta

    config = server.runtime.config
    old_ca = server.ca.ca_cert
    staged = stage_next(config.ca_dir, config.ca, None)
    activate(config.ca_dir, config.ca, at=datetime.now(UTC) + timedelta(seconds=2))
    server.runtime.authority.refresh()
    assert server.ca.ca_cert == old_ca and "GetNextCACert" in caps(server)
    assert server.runtime.authority.generations().at(datetime.now(UTC) + timedelta(seconds=3)).active.ca.ca_cert \
        == staged.ca.ca_cert
