"""PKIOperation end to end through the Flask app: enrollment, retries, renewal, polling, GetCert/GetCRL."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from scep_server.errors import FailInfo
from scep_server.scep import client
from scep_server.scep.types import ContentCipher, DigestAlgorithm, PKIStatus
from scep_server.store import CertStatus

from .conftest import Device, ScepTestServer


def test_get_ca_caps_lists_exact_keywords(server: ScepTestServer) -> None:
    response = server.http.get("/scep?operation=GetCACaps")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    caps = response.get_data(as_text=True).split("\n")
    assert caps == ["AES", "DES3", "POSTPKIOperation", "Renewal", "SHA-1", "SHA-256", "SHA-512", "SCEPStandard"]


def test_strict_profile_caps_omit_what_it_refuses(server: ScepTestServer) -> None:
    caps = server.http.get("/scep/strict?operation=GetCACaps").get_data(as_text=True).split("\n")
    assert "SHA-1" not in caps and "Renewal" not in caps and "SHA-256" in caps


@pytest.mark.parametrize(
    "path",
    ["/scep", "/scep/pkiclient.exe", "/cgi-bin/pkiclient.exe", "/certsrv/mscep/mscep.dll",
     "/certsrv/mscep/mscep.dll/pkiclient.exe", "/scep/legacy", "/scep/legacy/pkiclient.exe"],
)
@pytest.mark.parametrize("message", [None, "", "0", "default", "AnyCAName"])
def test_get_ca_cert_returns_ra_and_ca_on_every_path(server: ScepTestServer, path: str, message: str | None) -> None:
    query = {"operation": "GetCACert"} | ({} if message is None else {"message": message})
    response = server.http.get(path, query_string=query)
    assert response.status_code == 200
    assert response.mimetype == "application/x-x509-ca-ra-cert"
    certs = client.parse_get_ca_cert(response.data, response.mimetype)
    assert certs == [server.ca.ra_cert, server.ca.ca_cert]
    assert client.pick_recipient(certs) == server.ca.ra_cert


CIPHERS = [ContentCipher.AES128, ContentCipher.AES192, ContentCipher.AES256, ContentCipher.DES3]
DIGESTS = [DigestAlgorithm.SHA1, DigestAlgorithm.SHA256, DigestAlgorithm.SHA512]


@pytest.mark.parametrize("cipher", CIPHERS, ids=lambda c: c.name)
@pytest.mark.parametrize("digest", DIGESTS, ids=lambda d: d.name)
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_enrollment_round_trips_every_algorithm(
    server: ScepTestServer, cipher: ContentCipher, digest: DigestAlgorithm, method: str
) -> None:
    device = Device(common_name=f"dev-{cipher.name}-{digest.name}-{method}")
    built = server.pkcsreq(device, cipher=cipher, digest=digest)
    reply = server.send(built, device, method=method)
    assert reply.status is PKIStatus.SUCCESS
    assert reply.content_cipher is cipher, "the reply must use the client's content cipher"
    assert reply.digest is digest, "the reply must use the client's digest"
    cert = reply.certificate_for(device.key.public_key())
    cert.verify_directly_issued_by(server.ca.ca_cert)
    assert cert.subject == device.subject
    record = server.runtime.store.get_certificate(cert.serial_number)
    assert record is not None and record.transaction_id == built.transaction_id
    assert record.status is CertStatus.VALID and record.profile == "default"


def test_single_des_only_on_a_profile_that_allows_it(server: ScepTestServer) -> None:
    device = Device()
    refused = server.send(server.pkcsreq(device, cipher=ContentCipher.DES), device)
    assert refused.status is PKIStatus.FAILURE and refused.fail_info is FailInfo.BAD_ALG
    legacy = Device(common_name="legacy")
    built = server.pkcsreq(legacy, cipher=ContentCipher.DES, digest=DigestAlgorithm.SHA1)
    reply = server.send(built, legacy, profile="legacy")
    assert reply.status is PKIStatus.SUCCESS and reply.content_cipher is ContentCipher.DES


def test_issued_certificate_carries_csr_subject_and_sans(server: ScepTestServer) -> None:
    device = Device()
    subject = x509.Name.from_rfc4514_string("CN=alice@example.com,OU=Devices,O=Contoso")
    sans = x509.SubjectAlternativeName([
        x509.RFC822Name("alice@example.com"),
        x509.DNSName("laptop.example.com"),
        x509.UniformResourceIdentifier("IntuneDeviceId://abc-123"),
        x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x11alice@example.com"),
    ])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(sans, critical=False)
        .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, b"s3cret-challenge")
        .sign(device.key, hashes.SHA256())
    )
    cert = server.enroll(device, csr=csr)
    assert cert.subject == subject
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == sans
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca is False
    assert cert.serial_number.bit_length() > 64


def test_wrong_challenge_is_refused_and_nothing_is_issued(server: ScepTestServer) -> None:
    device = Device()
    reply = server.send(server.pkcsreq(device, challenge="not-the-secret"), device)
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    assert reply.fail_info_text == "challenge not accepted"  # the device's text is generic ...
    assert "challengePassword" in _audited_detail(server)  # ... the reason is the operator's
    assert server.issued_count() == 0


def test_missing_challenge_is_refused(server: ScepTestServer) -> None:
    device = Device()
    reply = server.send(server.pkcsreq(device, challenge=None), device)
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    assert server.issued_count() == 0


def test_failed_transaction_can_be_retried_with_the_right_challenge(server: ScepTestServer) -> None:
    device = Device()
    first = server.pkcsreq(device, challenge="wrong", transaction_id="RETRY-1")
    assert server.send(first, device).status is PKIStatus.FAILURE
    second = server.pkcsreq(device, transaction_id="RETRY-1")
    assert server.send(second, device).status is PKIStatus.SUCCESS
    assert server.issued_count() == 1


def test_same_transaction_retried_returns_the_same_certificate(server: ScepTestServer) -> None:
    device = Device()
    csr = device.csr()
    first = server.send(server.pkcsreq(device, csr=csr), device)
    again = server.send(server.pkcsreq(device, csr=csr), device)  # new nonce, same transactionID + CSR
    assert first.status is again.status is PKIStatus.SUCCESS
    assert first.certificates == again.certificates
    assert server.issued_count() == 1


def test_same_transaction_with_a_different_csr_is_refused(server: ScepTestServer) -> None:
    device = Device()
    assert server.send(server.pkcsreq(device, transaction_id="TX-1"), device).status is PKIStatus.SUCCESS
    other = Device(common_name="other")
    reply = server.send(server.pkcsreq(other, transaction_id="TX-1"), other)
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    assert server.issued_count() == 1


def test_renewal_signed_by_our_certificate_succeeds(server: ScepTestServer) -> None:
    old_device = Device()
    old_cert = server.enroll(old_device)
    new_device = Device(common_name=old_device.common_name)
    built = client.build_pkcsreq(
        new_device.csr(challenge=None), signer_cert=old_cert, signer_key=old_device.key,
        recipient=server.ca.ra_cert, renewal=True,
    )
    reply = client.parse_cert_rep(
        server.post(built.der).data, request=built, signer_key=old_device.key, signer_cert=old_cert,
        trusted_signers=[server.ca.ra_cert],
    )
    assert reply.status is PKIStatus.SUCCESS
    renewed = reply.certificate_for(new_device.key.public_key())
    assert renewed.serial_number != old_cert.serial_number
    assert server.issued_count() == 2


def test_renewal_signed_by_a_stranger_fails(server: ScepTestServer) -> None:
    stranger = Device(common_name="stranger")
    built = client.build_pkcsreq(
        stranger.csr(challenge=None), signer_cert=stranger.signer, signer_key=stranger.key,
        recipient=server.ca.ra_cert, renewal=True,
    )
    reply = server.send(built, stranger)
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    assert server.issued_count() == 0


def test_renewal_signed_by_a_revoked_certificate_fails(server: ScepTestServer) -> None:
    device = Device()
    cert = server.enroll(device)
    server.runtime.store.revoke(
        cert.serial_number, server.ca.issuer_name, reason=1, revoked_at=datetime.datetime.now(datetime.UTC)
    )
    built = client.build_pkcsreq(
        Device().csr(challenge=None), signer_cert=cert, signer_key=device.key,
        recipient=server.ca.ra_cert, renewal=True,
    )
    reply = server.send(built, device, signer=cert)
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    assert "revoked" in _audited_detail(server) and "revoked" not in (reply.fail_info_text or "")


def test_renewal_refused_where_the_profile_disables_it(server: ScepTestServer) -> None:
    device = Device()
    cert = server.enroll(device, profile="strict")
    built = client.build_pkcsreq(
        Device().csr(challenge=None), signer_cert=cert, signer_key=device.key,
        recipient=server.ca.ra_cert, renewal=True,
    )
    reply = server.send(built, device, signer=cert, profile="strict")
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST


def test_strict_profile_forces_key_usage_and_eku(server: ScepTestServer) -> None:
    cert = server.enroll(Device(), profile="strict")
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_cert_poll_returns_the_issued_certificate(server: ScepTestServer) -> None:
    device = Device()
    built = server.pkcsreq(device)
    cert = server.send(built, device).certificate_for(device.key.public_key())
    poll = client.build_cert_poll(
        server.ca.ca_cert.subject, device.subject, transaction_id=built.transaction_id,
        signer_cert=device.signer, signer_key=device.key, recipient=server.ca.ra_cert,
    )
    reply = server.send(poll, device)
    assert reply.status is PKIStatus.SUCCESS and reply.certificates == (cert,)


def test_cert_poll_for_an_unknown_transaction_is_bad_cert_id(server: ScepTestServer) -> None:
    device = Device()
    poll = client.build_cert_poll(
        server.ca.ca_cert.subject, device.subject, transaction_id="NEVER-SEEN",
        signer_cert=device.signer, signer_key=device.key, recipient=server.ca.ra_cert,
    )
    reply = server.send(poll, device)
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_CERT_ID


def test_get_cert_by_issuer_and_serial(server: ScepTestServer) -> None:
    device = Device()
    cert = server.enroll(device)
    built = client.build_get_cert(
        server.ca.ca_cert.subject, cert.serial_number,
        signer_cert=device.signer, signer_key=device.key, recipient=server.ca.ra_cert,
    )
    reply = server.send(built, device)
    assert reply.status is PKIStatus.SUCCESS and reply.certificates == (cert,)


def test_get_cert_for_an_unknown_serial_is_bad_cert_id(server: ScepTestServer) -> None:
    device = Device()
    built = client.build_get_cert(
        server.ca.ca_cert.subject, 12345,
        signer_cert=device.signer, signer_key=device.key, recipient=server.ca.ra_cert,
    )
    reply = server.send(built, device)
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_CERT_ID


def test_get_crl_returns_a_crl_signed_by_the_ca_listing_revocations(server: ScepTestServer) -> None:
    device = Device()
    cert = server.enroll(device)
    server.runtime.store.revoke(
        cert.serial_number, server.ca.issuer_name, reason=1, revoked_at=datetime.datetime.now(datetime.UTC)
    )
    server.runtime.crls.invalidate()
    built = client.build_get_crl(
        server.ca.ca_cert.subject, cert.serial_number,
        signer_cert=device.signer, signer_key=device.key, recipient=server.ca.ra_cert,
    )
    reply = server.send(built, device)
    assert reply.status is PKIStatus.SUCCESS and len(reply.crls) == 1
    crl = reply.crls[0]
    assert crl.is_signature_valid(server.ca.ca_cert.public_key())  # type: ignore[arg-type]
    revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert revoked is not None


def test_crl_and_ca_certificate_are_published(server: ScepTestServer) -> None:
    crl = server.http.get("/crl/test-ca.crl")
    assert crl.status_code == 200 and crl.mimetype == "application/pkix-crl"
    assert x509.load_der_x509_crl(crl.data).issuer == server.ca.ca_cert.subject
    ca = server.http.get("/ca/test-ca.crt")
    assert x509.load_der_x509_certificate(ca.data) == server.ca.ca_cert
    assert server.http.get("/crl/other.crl").status_code == 404


def test_every_pki_operation_is_audited(server: ScepTestServer) -> None:
    device = Device()
    server.send(server.pkcsreq(device, challenge="wrong"), device)
    server.enroll(Device())
    events = server.runtime.store.list_operations(limit=10)
    outcomes = sorted(e.outcome for e in events)
    assert outcomes == ["FAILURE:BAD_REQUEST", "SUCCESS"]


def test_health_endpoints(server: ScepTestServer) -> None:
    assert server.http.get("/healthz").status_code == 200
    assert server.http.get("/livez").status_code == 200


def test_metrics_count_operations_and_issuance(server: ScepTestServer) -> None:
    def sample(text: str, prefix: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    issued = 'scep_certificates_issued_total{profile="default"}'
    before = sample(server.http.get("/metrics").get_data(as_text=True), issued)
    server.enroll(Device())
    text = server.http.get("/metrics").get_data(as_text=True)
    assert sample(text, issued) == before + 1
    assert 'scep_pki_operations_total{message_type="PKCS_REQ",outcome="SUCCESS",profile="default"}' in text
    assert "scep_ca_certificate_not_after_seconds" in text


def _audited_detail(server: ScepTestServer) -> str:
    """The reason the audit log keeps for the latest PKIOperation."""
    return server.runtime.store.list_operations(limit=1)[0].detail or ""


def _renewal(server: ScepTestServer, old: Device, old_cert: x509.Certificate, csr: x509.CertificateSigningRequest,
             profile: str | None = None) -> client.CertRep:
    built = client.build_pkcsreq(csr, signer_cert=old_cert, signer_key=old.key, recipient=server.ca.ra_cert,
                                 renewal=True)
    return server.send(built, old, signer=old_cert, profile=profile)


def test_renewal_cannot_change_the_identity(server: ScepTestServer) -> None:
    old = Device(common_name="lowly-device")
    old_cert = server.enroll(old)
    impostor = Device(common_name="Domain Admin")
    reply = _renewal(server, old, old_cert, impostor.csr(challenge=None))
    assert reply.status is PKIStatus.FAILURE and "subject" in _audited_detail(server)
    key = Device().key
    with_san = (
        x509.CertificateSigningRequestBuilder().subject_name(old.subject)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("administrator@corp.example")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    assert _renewal(server, old, old_cert, with_san).status is PKIStatus.FAILURE
    with_eku = (
        x509.CertificateSigningRequestBuilder().subject_name(old.subject)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(key, hashes.SHA256())
    )
    assert _renewal(server, old, old_cert, with_eku).status is PKIStatus.FAILURE
    assert server.issued_count() == 1


def test_renewal_stays_in_the_profile_that_issued(server: ScepTestServer) -> None:
    old = Device(common_name="legacy-device")
    old_cert = server.enroll(old, profile="legacy")
    reply = _renewal(server, old, old_cert, Device(common_name="legacy-device").csr(challenge=None))
    assert reply.status is PKIStatus.FAILURE and "profile" in _audited_detail(server)
