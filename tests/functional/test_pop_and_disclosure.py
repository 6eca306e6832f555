"""Findings 3 (proof of possession), 7 (out-of-range serials) and 8 (disclosure) against a running server.

Finding 3: a PKCSReq must be signed with its CSR's key (RFC 8894 §2.3) or with a valid certificate of
ours (renewal by PKCSReq); a self-signed signer's subject is only compared where a profile asks (Apple
devices and micromdm's scepclient sign as ``CN=SCEP SIGNER``).
Finding 8: CertPoll answers only the requester, GetCert only the certificate's holder (or anyone on a
``get_cert: any`` profile) and only within the profile; failInfoText is generic.
Finding 7: serial numbers the store cannot hold are badCertId / badRequest, never a 500.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from sqlalchemy import update

from scep_server.errors import BadCertId, ChallengeRejected, RetryLater
from scep_server.scep import client, cms
from scep_server.scep.device_key import DeviceKey
from scep_server.scep.types import Attr, DigestAlgorithm, FailInfo, MessageType, PKIStatus
from scep_server.store import CertStatus
from scep_server.store.tables import transactions

from .conftest import Device, ScepTestServer, make_config, serving
from .intune_env import IntuneEnv, enroll

CONFIG = """
data_dir: {data_dir}
ca: {{name: test-ca, subject: "CN=Test Issuing CA,O=scep-server tests", key_size: 2048}}
profiles:
  default:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
  signer-subject:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
    require_signer_subject: true
  directory:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
    get_cert: any
"""
FIXED_SIGNER = x509.Name.from_rfc4514_string("CN=SCEP SIGNER,O=scep-client")  # micromdm scepclient, Apple alike
PRINTABLE = x509.name._ASN1Type.PrintableString


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ScepTestServer]:
    with serving(make_config(tmp_path, CONFIG)) as started:
        yield started


def _signed_pkcsreq(
    server: ScepTestServer, csr: x509.CertificateSigningRequest, signer: x509.Certificate, key: RSAPrivateKey
) -> client.BuiltRequest:
    return client.build_pkcsreq(csr, signer_cert=signer, signer_key=key, recipient=server.ca.ra_cert,
                                transaction_id=uuid.uuid4().hex.upper())


def _unreadable_envelope_answer(server: ScepTestServer) -> tuple[FailInfo | None, str | None]:
    """What anyone gets for an envelope that does not open: the answer a refused signer must match."""
    device = Device()
    built = client.build_pki_request(
        MessageType.PKCS_REQ, b"\x30\x03\x02\x01\x05", signer_cert=device.signer, signer_key=device.key,
        recipient=server.ca.ra_cert, transaction_id="UNREADABLE",
    )
    reply = server.send(built, device)
    return reply.fail_info, reply.fail_info_text


def _audited_detail(server: ScepTestServer) -> str:
    return server.runtime.store.list_operations(limit=1)[0].detail or ""


# --- finding 3: proof of possession ----------------------------------------------------------------


def test_finding3_signer_key_must_match_csr(server: ScepTestServer) -> None:
    victim, attacker = Device(common_name="victim"), Device(common_name="victim")
    built = _signed_pkcsreq(server, victim.csr(), client.self_signed_signer(attacker.key, victim.subject), attacker.key)
    reply = server.send(built, attacker)
    assert reply.status is PKIStatus.FAILURE
    assert (reply.fail_info, reply.fail_info_text) == _unreadable_envelope_answer(server)
    assert server.issued_count() == 0
    assert server.runtime.store.get_transaction("default", built.transaction_id) is None  # nothing claimed


def test_finding3_captured_envelope_resigned_under_a_new_transaction_id_gets_nothing(server: ScepTestServer) -> None:
    victim = Device(common_name="victim-laptop")
    captured = server.pkcsreq(victim)
    assert server.send(captured, victim).status is PKIStatus.SUCCESS
    signed = asn1_cms.ContentInfo.load(captured.der)["content"]
    envelope = signed["encap_content_info"]["content"].native  # the ciphertext, untouched
    attacker = Device(common_name="attacker")
    attributes = [
        cms.make_attribute(Attr.MESSAGE_TYPE, core.PrintableString(str(int(MessageType.PKCS_REQ)))),
        cms.make_attribute(Attr.TRANSACTION_ID, core.PrintableString("ATTACKER-TX")),
        cms.make_attribute(Attr.SENDER_NONCE, core.OctetString(b"0123456789abcdef")),
    ]
    resigned = cms.sign(envelope, signer_cert=attacker.signer, signer_key=DeviceKey(attacker.key),
                        digest=DigestAlgorithm.SHA256, attributes=attributes)
    response = server.post(resigned)
    assert response.status_code == 200
    reply = client.parse_cert_rep(
        response.data, request=client.BuiltRequest(resigned, "ATTACKER-TX", b"0123456789abcdef",
                                                   MessageType.PKCS_REQ),
        signer_key=attacker.key, signer_cert=attacker.signer, trusted_signers=[server.ca.ra_cert],
    )
    assert reply.status is PKIStatus.FAILURE and not reply.certificates
    assert (reply.fail_info, reply.fail_info_text) == _unreadable_envelope_answer(server)
    assert server.issued_count() == 1


def test_finding3_fixed_signer_subject_is_accepted_by_default(server: ScepTestServer) -> None:
    device = Device(common_name="mac-01")
    signer = client.self_signed_signer(device.key, FIXED_SIGNER)
    reply = server.send(_signed_pkcsreq(server, device.csr(), signer, device.key), device, signer=signer)
    assert reply.status is PKIStatus.SUCCESS
    assert reply.certificate_for(device.key.public_key()).subject == device.subject


def test_finding3_signer_subject_is_required_where_the_profile_asks(server: ScepTestServer) -> None:
    device = Device(common_name="router-01")
    fixed = client.self_signed_signer(device.key, FIXED_SIGNER)
    refused = server.send(_signed_pkcsreq(server, device.csr(), fixed, device.key), device, signer=fixed,
                          profile="signer-subject")
    assert refused.status is PKIStatus.FAILURE and refused.fail_info is FailInfo.BAD_MESSAGE_CHECK
    # Same subject in another encoding and case: RFC 5280 §7.1 comparison.
    same = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ROUTER-01", _type=PRINTABLE)])
    signer = client.self_signed_signer(device.key, same)
    accepted = server.send(_signed_pkcsreq(server, device.csr(), signer, device.key), device, signer=signer,
                           profile="signer-subject")
    assert accepted.status is PKIStatus.SUCCESS


def test_finding3_pkcsreq_signed_by_a_valid_certificate_of_ours_is_accepted(server: ScepTestServer) -> None:
    """How macOS (and Intune's renewals, in the simulator) renew: a PKCSReq signed by the current certificate."""
    old = Device(common_name="mac-renewing")
    current = server.enroll(old)
    new = Device(common_name="mac-renewing")
    built = _signed_pkcsreq(server, new.csr(), current, old.key)
    reply = server.send(built, old, signer=current)
    assert reply.status is PKIStatus.SUCCESS
    assert reply.certificate_for(new.key.public_key()).serial_number != current.serial_number


def test_finding3_pkcsreq_signed_by_a_revoked_certificate_of_ours_is_refused(server: ScepTestServer) -> None:
    old = Device(common_name="revoked-device")
    current = server.enroll(old)
    server.runtime.store.revoke(current.serial_number, server.ca.issuer_name, reason=1,
                                revoked_at=datetime.now(UTC))
    reply = server.send(_signed_pkcsreq(server, Device(common_name="x").csr(), current, old.key), old, signer=current)
    assert reply.status is PKIStatus.FAILURE
    assert (reply.fail_info, reply.fail_info_text) == _unreadable_envelope_answer(server)
    assert server.issued_count() == 1


# --- finding 8: CertPoll ---------------------------------------------------------------------------


def _poll(
    server: ScepTestServer, poller: Device, transaction_id: str, *, subject: x509.Name | None = None,
    issuer: x509.Name | None = None,
) -> client.CertRep:
    built = client.build_cert_poll(
        issuer or server.ca.ca_cert.subject, subject or poller.subject, transaction_id=transaction_id,
        signer_cert=poller.signer, signer_key=poller.key, recipient=server.ca.ra_cert,
    )
    return server.send(built, poller)


def _enrolled(server: ScepTestServer, device: Device) -> tuple[client.BuiltRequest, x509.Certificate]:
    built = server.pkcsreq(device)
    return built, server.send(built, device).certificate_for(device.key.public_key())


def _assert_bad_cert_id(reply: client.CertRep) -> None:
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_CERT_ID
    assert reply.fail_info_text == BadCertId.public_text and not reply.certificates


def test_finding8_cert_poll_by_a_stranger_is_bad_cert_id(server: ScepTestServer) -> None:
    victim = Device(common_name="victim")
    built, _ = _enrolled(server, victim)
    stranger = Device(common_name="victim")  # the victim's subject, another key
    reply = _poll(server, stranger, built.transaction_id)
    _assert_bad_cert_id(reply)
    assert "signed with another key" in _audited_detail(server)
    assert reply.fail_info_text == _poll(server, stranger, "NEVER-SEEN").fail_info_text  # indistinguishable


def test_finding8_cert_poll_must_name_the_request_subject(server: ScepTestServer) -> None:
    device = Device(common_name="device-a")
    built, _ = _enrolled(server, device)
    other = x509.Name.from_rfc4514_string("CN=device-b")
    _assert_bad_cert_id(_poll(server, device, built.transaction_id, subject=other))
    assert "another subject" in _audited_detail(server)


def test_finding8_cert_poll_must_name_this_ca(server: ScepTestServer) -> None:
    device = Device(common_name="device-a")
    built, _ = _enrolled(server, device)
    _assert_bad_cert_id(_poll(server, device, built.transaction_id, issuer=x509.Name.from_rfc4514_string("CN=Else")))


def test_finding8_cert_poll_by_the_requester_matches_its_subject_as_rfc5280_compares(server: ScepTestServer) -> None:
    device = Device(common_name="Device-A")
    built, cert = _enrolled(server, device)
    folded = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "device-a", _type=PRINTABLE)])
    reply = _poll(server, device, built.transaction_id, subject=folded)
    assert reply.status is PKIStatus.SUCCESS and reply.certificates == (cert,)


def test_finding8_cert_poll_of_a_transaction_without_a_recorded_requester_is_refused(
    server: ScepTestServer,
) -> None:
    device = Device()
    built, _ = _enrolled(server, device)
    with server.runtime.store.engine.begin() as conn:  # as a row written before migration 0004
        conn.execute(update(transactions).values(signer_key_sha256=None, subject_sha256=None))
    _assert_bad_cert_id(_poll(server, device, built.transaction_id))


# --- finding 8: GetCert ----------------------------------------------------------------------------


def _get_cert(
    server: ScepTestServer, serial: int, signer: x509.Certificate, key: RSAPrivateKey, profile: str | None = None
) -> client.CertRep:
    built = client.build_get_cert(server.ca.ca_cert.subject, serial, signer_cert=signer, signer_key=key,
                                  recipient=server.ca.ra_cert)
    response = server.post(built.der, profile)
    assert response.status_code == 200, response.get_data(as_text=True)
    return client.parse_cert_rep(response.data, request=built, signer_key=key, signer_cert=signer,
                                 trusted_signers=[server.ca.ra_cert])


def test_finding8_get_cert_of_another_device_is_bad_cert_id(server: ScepTestServer) -> None:
    _, cert = _enrolled(server, Device(common_name="victim"))
    stranger = Device(common_name="stranger")
    reply = _get_cert(server, cert.serial_number, stranger.signer, stranger.key)
    _assert_bad_cert_id(reply)
    assert reply.fail_info_text == _get_cert(server, 0xDEAD, stranger.signer, stranger.key).fail_info_text


def test_finding8_get_cert_by_a_self_signed_certificate_with_the_victims_subject_is_refused(
    server: ScepTestServer,
) -> None:
    victim = Device(common_name="victim")
    _, cert = _enrolled(server, victim)
    impostor = Device(common_name="victim")
    _assert_bad_cert_id(_get_cert(server, cert.serial_number, impostor.signer, impostor.key))


def test_finding8_get_cert_by_the_holder_of_a_later_certificate_of_the_same_subject(server: ScepTestServer) -> None:
    old = Device(common_name="laptop-7")
    _, first = _enrolled(server, old)
    new = Device(common_name="laptop-7")
    renewal = client.build_pkcsreq(new.csr(challenge=None), signer_cert=first, signer_key=old.key,
                                   recipient=server.ca.ra_cert, renewal=True)
    second = server.send(renewal, old, signer=first).certificate_for(new.key.public_key())
    reply = _get_cert(server, first.serial_number, second, new.key)
    assert reply.status is PKIStatus.SUCCESS and reply.certificates == (first,)


def test_finding8_get_cert_answers_only_certificates_of_the_profile(server: ScepTestServer) -> None:
    device = Device(common_name="wifi-device")
    cert = server.enroll(device, profile="directory")
    _assert_bad_cert_id(_get_cert(server, cert.serial_number, device.signer, device.key, profile="default"))
    mine = _get_cert(server, cert.serial_number, device.signer, device.key, profile="directory")
    assert mine.status is PKIStatus.SUCCESS


def test_finding8_get_cert_any_answers_anyone_within_the_profile(server: ScepTestServer) -> None:
    peer = Device(common_name="peer")
    cert = server.enroll(peer, profile="directory")
    anyone = Device(common_name="anyone")
    reply = _get_cert(server, cert.serial_number, anyone.signer, anyone.key, profile="directory")
    assert reply.status is PKIStatus.SUCCESS and reply.certificates == (cert,)
    _, default_cert = _enrolled(server, Device(common_name="private"))
    _assert_bad_cert_id(_get_cert(server, default_cert.serial_number, anyone.signer, anyone.key, "directory"))


# --- finding 8: failInfoText -----------------------------------------------------------------------


def test_finding8_fail_info_text_is_generic_for_a_refused_challenge(server: ScepTestServer) -> None:
    device = Device()
    reply = server.send(server.pkcsreq(device, challenge="wrong"), device)
    assert reply.fail_info_text == ChallengeRejected.public_text
    assert "challengePassword does not match" in _audited_detail(server)


def test_finding8_fail_info_text_names_no_serial_or_upstream_status(
    intune_env: IntuneEnv, caplog: pytest.LogCaptureFixture
) -> None:
    intune_env.state.inject_fault("successNotification", status=500)
    reply, _, _ = enroll(intune_env)
    assert reply.status is PKIStatus.FAILURE and reply.fail_info_text == RetryLater.public_text
    withdrawn = intune_env.server.runtime.store.list_certificates(status=CertStatus.REVOKED)
    assert len(withdrawn) == 1
    serial = f"{withdrawn[0].serial:x}"
    detail = intune_env.server.runtime.store.list_operations(limit=1)[0].detail or ""
    assert serial in detail and "500" in detail  # the operator's record has it all ...
    assert serial in caplog.text
    text = reply.fail_info_text or ""
    assert serial not in text and "500" not in text  # ... not the device


# --- finding 7: serial numbers outside the store's bounds ------------------------------------------


@pytest.mark.parametrize("serial", [0, -1, 1 << 160, (1 << 200) + 5])
def test_finding7_get_cert_with_an_out_of_range_serial_is_bad_cert_id(server: ScepTestServer, serial: int) -> None:
    device = Device()
    _assert_bad_cert_id(_get_cert(server, serial, device.signer, device.key))


def _certificate_claiming(issuer: x509.Name, serial: int, key: RSAPrivateKey) -> x509.Certificate:
    """A certificate that names our CA as its issuer and ``serial`` (which cryptography refuses to build)."""
    template = client.self_signed_signer(key, x509.Name.from_rfc4514_string("CN=renewer"))
    parsed = asn1_x509.Certificate.load(template.public_bytes(serialization.Encoding.DER))
    tbs = parsed["tbs_certificate"]
    tbs["serial_number"] = serial
    tbs["issuer"] = asn1_x509.Name.load(issuer.public_bytes())
    signature = key.sign(tbs.dump(force=True), PKCS1v15(), hashes.SHA256())
    forged = asn1_x509.Certificate(
        {"tbs_certificate": tbs, "signature_algorithm": parsed["signature_algorithm"], "signature_value": signature}
    )
    with warnings.catch_warnings():  # cryptography warns about non-positive serials
        warnings.simplefilter("ignore")
        return x509.load_der_x509_certificate(forged.dump())


@pytest.mark.parametrize("serial", [0, -1, 1 << 160])
def test_finding7_renewal_signer_with_an_out_of_range_serial_is_bad_request(
    server: ScepTestServer, serial: int
) -> None:
    device = Device(common_name="renewer")
    signer = _certificate_claiming(server.ca.ca_cert.subject, serial, device.key)
    built = client.build_pkcsreq(Device(common_name="renewer").csr(challenge=None), signer_cert=signer,
                                 signer_key=device.key, recipient=server.ca.ra_cert, renewal=True)
    response = server.post(built.der)
    assert response.status_code == 200, response.get_data(as_text=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reply = client.parse_cert_rep(response.data, request=built, signer_key=device.key, signer_cert=signer,
                                      trusted_signers=[server.ca.ra_cert])
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    assert server.issued_count() == 0
