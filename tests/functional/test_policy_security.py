"""Findings 2 and 11 of the outside review, replayed through real PKIOperations.

The reviewer got a SID in as a URI subjectAltName, dangerous EKUs, a leaf named like the CA, 6,000
SANs and escape sequences in a CN issued, and `certs list` printed them raw; a renewal could change
keyUsage and the SID. Each must now end in CertRep FAILURE badRequest with a reason naming the setting,
and nothing stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID, NameOID

from scep_server.ca.csr import extract_sids, sid_extension_value
from scep_server.ca.issue import thumbprints
from scep_server.cli import main
from scep_server.errors import FailInfo
from scep_server.intune.contract import ChallengeSpec
from scep_server.pki.usages import CERTIFICATE_REQUEST_AGENT
from scep_server.scep import client
from scep_server.scep.types import PKIStatus
from scep_server.store import NewCertificate

from .conftest import CHALLENGE, Device, ScepTestServer, device_key, make_config, serving
from .intune_env import IntuneEnv

CONFIG = """
data_dir: {data_dir}
ca:
  name: policy-ca
  subject: "CN=Policy Issuing CA,O=scep-server tests"
  key_size: 2048
profiles:
  default:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
  sid:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
    allow_sid_extension: true
  hello:
    challenge: {{type: static, secret: {{value: "{challenge}"}}}}
    allowed_extended_key_usages: [smartcard_logon]
"""
SID = "S-1-5-21-1004336348-1177238915-682003330-1105"
SID_URI = f"tag:microsoft.com,2022-09-14:sid:{SID}"
ADMIN_SID = "S-1-5-21-1004336348-1177238915-682003330-500"
KEYS: dict[bytes, rsa.RSAPrivateKey] = {}  # the private key of each CSR built here, by its SubjectPublicKeyInfo


@pytest.fixture
def policy_server(tmp_path: Path) -> Iterator[ScepTestServer]:
    with serving(make_config(tmp_path, CONFIG)) as started:
        yield started


def request_csr(
    key: rsa.RSAPrivateKey,
    subject: x509.Name | str = "CN=device-01",
    *,
    sans: list[x509.GeneralName] | None = None,
    ekus: list[x509.ObjectIdentifier] | None = None,
    key_usage: x509.KeyUsage | None = None,
    sid: str | None = None,
    challenge: str | None = CHALLENGE,
) -> x509.CertificateSigningRequest:
    name = subject if isinstance(subject, x509.Name) else x509.Name.from_rfc4514_string(subject)
    KEYS[key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)] = key
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if sid is not None:
        builder = builder.add_extension(sid_extension_value(sid), critical=False)
    if challenge is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    return builder.sign(key, hashes.SHA256())


def submit(server: ScepTestServer, csr: x509.CertificateSigningRequest, profile: str | None = None) -> client.CertRep:
    """A PKCSReq for ``csr``, signed (as devices do) with a self-signed certificate for the CSR's key."""
    key = KEYS[csr.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)]
    device = Device(key=key)
    return server.send(server.pkcsreq(device, csr=csr), device, profile=profile)


def reason(server: ScepTestServer, reply: client.CertRep) -> str:
    """Why the server refused: the detail its audit log keeps for the reply's transaction."""
    [latest, *_] = server.runtime.store.list_operations(transaction_id=reply.transaction_id)
    return latest.detail or ""


def assert_refused(server: ScepTestServer, reply: client.CertRep, *needles: str) -> str:
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST, reply.fail_info_text
    detail = reason(server, reply)
    for needle in needles:
        assert needle in detail, detail
    assert server.issued_count() == 0
    return detail


def issue(server: ScepTestServer, csr: x509.CertificateSigningRequest, profile: str | None = None) -> x509.Certificate:
    reply = submit(server, csr, profile)
    assert reply.status is PKIStatus.SUCCESS, reply.fail_info_text
    return reply.certificate_for(csr.public_key())


def ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def key_usage(*names: str) -> x509.KeyUsage:
    flags = (
        "digital_signature content_commitment key_encipherment data_encipherment key_agreement "
        "key_cert_sign crl_sign encipher_only decipher_only"
    ).split()
    return x509.KeyUsage(**{flag: flag in names for flag in flags})


# --- SIDs ---------------------------------------------------------------------------------------


def test_finding2_sid_uri_san_refused(policy_server: ScepTestServer) -> None:
    csr = request_csr(device_key(), sans=[x509.UniformResourceIdentifier(SID_URI)])
    assert_refused(policy_server, submit(policy_server, csr), "SID", "allow_sid_extension")


def test_finding2_sid_uri_san_allowed_when_sid_allowed(policy_server: ScepTestServer) -> None:
    csr = request_csr(device_key(), sans=[x509.UniformResourceIdentifier(SID_URI)])
    assert extract_sids(issue(policy_server, csr, "sid")) == (SID,)


# --- EKUs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "eku",
    [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE, CERTIFICATE_REQUEST_AGENT, ExtendedKeyUsageOID.SMARTCARD_LOGON,
     ExtendedKeyUsageOID.OCSP_SIGNING],
    ids=["any", "certificate-request-agent", "smartcard-logon", "ocsp-signing"],
)
def test_finding2_dangerous_eku_refused(policy_server: ScepTestServer, eku: x509.ObjectIdentifier) -> None:
    csr = request_csr(device_key(), ekus=[ExtendedKeyUsageOID.CLIENT_AUTH, eku])
    assert_refused(policy_server, submit(policy_server, csr), eku.dotted_string, "allowed_extended_key_usages")


def test_finding2_dangerous_eku_allowed_where_the_profile_lists_it(policy_server: ScepTestServer) -> None:
    wanted = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SMARTCARD_LOGON]
    assert ekus(issue(policy_server, request_csr(device_key(), ekus=wanted), "hello")) == wanted
    reply = submit(policy_server, request_csr(device_key(), ekus=[CERTIFICATE_REQUEST_AGENT]), "hello")
    assert reply.status is PKIStatus.FAILURE and CERTIFICATE_REQUEST_AGENT.dotted_string in reason(policy_server, reply)


@pytest.mark.parametrize("eku", [ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.SERVER_AUTH])
def test_finding2_code_signing_and_server_auth_refused_on_static_default(
    policy_server: ScepTestServer, eku: x509.ObjectIdentifier
) -> None:
    csr = request_csr(device_key(), ekus=[eku])
    assert_refused(policy_server, submit(policy_server, csr), eku.dotted_string, "allowed_extended_key_usages")


def test_finding2_client_auth_allowed(policy_server: ScepTestServer) -> None:
    cert = issue(policy_server, request_csr(device_key(), ekus=[ExtendedKeyUsageOID.CLIENT_AUTH]))
    assert ekus(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ekus(issue(policy_server, request_csr(device_key()))) == [ExtendedKeyUsageOID.CLIENT_AUTH]


# --- SANs and names -----------------------------------------------------------------------------


def test_finding2_6000_sans_refused(policy_server: ScepTestServer) -> None:
    sans: list[x509.GeneralName] = [x509.DNSName(f"h{index}.example.com") for index in range(6000)]
    assert_refused(policy_server, submit(policy_server, request_csr(device_key(), sans=sans)), "6000", "max_sans")


def test_finding2_more_than_20_sans_refused(policy_server: ScepTestServer) -> None:
    sans: list[x509.GeneralName] = [x509.DNSName(f"h{index}.example.com") for index in range(21)]
    assert_refused(policy_server, submit(policy_server, request_csr(device_key(), sans=sans)), "21", "max_sans")


@pytest.mark.parametrize("char", ["\x1b", "\r", "\n"], ids=["ESC", "CR", "LF"])
def test_finding2_esc_cr_lf_in_cn_refused(policy_server: ScepTestServer, char: str) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pc{char}[31mCN=Administrator")])
    reply = submit(policy_server, request_csr(device_key(), subject))
    detail = assert_refused(policy_server, reply, "control character", f"U+{ord(char):04X}")
    assert char not in detail and char not in (reply.fail_info_text or "")


@pytest.mark.parametrize("subject", ["CN=Policy Issuing CA,O=scep-server tests", "CN=policy issuing ca,O=Other"])
def test_finding2_leaf_named_like_the_ca_refused(policy_server: ScepTestServer, subject: str) -> None:
    assert_refused(policy_server, submit(policy_server, request_csr(device_key(), subject)), "named like the CA")


# --- renewal (finding 11) -----------------------------------------------------------------------


def renew(
    server: ScepTestServer, key: rsa.RSAPrivateKey, current: x509.Certificate, csr: x509.CertificateSigningRequest,
    profile: str | None = None,
) -> client.CertRep:
    holder = Device(key=key)
    built = client.build_pkcsreq(csr, signer_cert=current, signer_key=key, recipient=server.ca.ra_cert, renewal=True)
    return server.send(built, holder, signer=current, profile=profile)


def test_finding11_renewal_changing_key_usage_refused(policy_server: ScepTestServer) -> None:
    key = device_key()
    current = issue(policy_server, request_csr(key, key_usage=key_usage("digital_signature")))
    wider = request_csr(device_key(), key_usage=key_usage("digital_signature", "key_encipherment"), challenge=None)
    reply = renew(policy_server, key, current, wider)
    assert reply.status is PKIStatus.FAILURE and "keep the key usage" in reason(policy_server, reply)
    same = request_csr(device_key(), key_usage=key_usage("digital_signature"), challenge=None)
    assert renew(policy_server, key, current, same).status is PKIStatus.SUCCESS
    assert policy_server.issued_count() == 2


def test_finding11_renewal_changing_sid_refused(policy_server: ScepTestServer) -> None:
    key = device_key()
    current = issue(policy_server, request_csr(key, sid=SID), "sid")
    reply = renew(policy_server, key, current, request_csr(device_key(), sid=ADMIN_SID, challenge=None), "sid")
    assert reply.status is PKIStatus.FAILURE and "keep the SID" in reason(policy_server, reply)
    same = request_csr(device_key(), sid=SID, challenge=None)
    reply = renew(policy_server, key, current, same, "sid")
    assert reply.status is PKIStatus.SUCCESS
    assert extract_sids(reply.certificate_for(same.public_key())) == (SID,)


# --- the CLI --------------------------------------------------------------------------------------


def test_finding2_certs_list_and_show_escape_control_characters(
    policy_server: ScepTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A certificate stored before names were checked, its CN holding a terminal escape sequence.
    cert = issue(policy_server, request_csr(device_key()))
    sha1, sha256 = thumbprints(cert)
    now = datetime.now(UTC)
    policy_server.runtime.store.record_issued(profile="default", transaction_id=None, certificate=NewCertificate(
        serial=cert.serial_number + 1, issuer=policy_server.ca.issuer_name, subject="CN=evil\x1b[2J\r\nroot",
        sans=("dns:a\x1b.example",), not_before=now, not_after=now + timedelta(days=1), profile="default",
        transaction_id=None, requester_ip=None, der=cert.public_bytes(Encoding.DER), sha1_thumbprint=sha1,
        sha256_thumbprint=sha256,
    ))
    config = str(tmp_path / "scep-server.yaml")
    assert main(["--config", config, "certs", "list"]) == 0
    listing = capsys.readouterr().out
    assert "CN=evil\\1B[2J\\0D\\0Aroot" in listing and "\x1b" not in listing and "\r" not in listing
    assert main(["--config", config, "certs", "show", f"{cert.serial_number + 1:x}"]) == 0
    shown = capsys.readouterr().out
    assert "CN=evil\\1B[2J" in shown and "dns:a\\1B.example" in shown and "\x1b" not in shown


# --- Intune profiles ------------------------------------------------------------------------------


def intune_csr(spec: ChallengeSpec, key: rsa.RSAPrivateKey, challenge: str) -> x509.CertificateSigningRequest:
    """A CSR exactly as the Intune profile behind ``spec`` asks for it, EKUs included."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name.from_rfc4514_string(spec.subject))
        .add_extension(key_usage("digital_signature", "key_encipherment"), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.ObjectIdentifier(oid) for oid in spec.extended_key_usage]),
                       critical=False)
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
        .sign(key, hashes.SHA256())
    )


def intune_enroll(env: IntuneEnv, spec: ChallengeSpec, key: rsa.RSAPrivateKey | None = None) -> client.CertRep:
    device = Device(key=key or device_key(), common_name="signer")
    csr = intune_csr(spec, device.key, env.state.mint_challenge(spec))
    built = env.server.pkcsreq(device, csr=csr, transaction_id=uuid.uuid4().hex.upper())
    return env.server.send(built, device, profile="intune")


@pytest.mark.parametrize(
    "eku", [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE.dotted_string, CERTIFICATE_REQUEST_AGENT.dotted_string]
)
def test_finding2_dangerous_eku_refused_on_intune_profiles(intune_env: IntuneEnv, eku: str) -> None:
    # Intune validated the request (the EKU is in its profile); the CA's policy still refuses it.
    reply = intune_enroll(intune_env, ChallengeSpec(subject="CN=agent-device", extended_key_usage=(eku,)))
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    detail = reason(intune_env.server, reply)
    assert eku in detail and "allowed_extended_key_usages" in detail
    assert intune_env.server.issued_count() == 0
    assert intune_env.server.runtime.store.outbox_counts()["pending"] == 1  # Intune hears of the failure


def test_finding2_intune_profiles_keep_the_ekus_intune_validated(intune_env: IntuneEnv) -> None:
    ipsec = "1.3.6.1.5.5.7.3.6"
    key = device_key()
    reply = intune_enroll(intune_env, ChallengeSpec(subject="CN=vpn-device", extended_key_usage=(ipsec,)), key)
    assert reply.status is PKIStatus.SUCCESS, reply.fail_info_text
    assert [oid.dotted_string for oid in ekus(reply.certificate_for(key.public_key()))] == [ipsec]
