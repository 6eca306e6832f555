"""The issuance policy's allow-lists against the outside review's findings 2 and 11.

Finding 2: SIDs as URI subjectAltNames, dangerous EKUs, leaves named like the CA, thousands of SANs and
control characters in names all got through. Finding 11: a renewal could change keyUsage and the SID.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scep_server.ca.authority import CertificateAuthority, init_ca
from scep_server.ca.csr import (
    SID_EXTENSION_OID,
    UPN_OID,
    check_csr,
    check_renewal_identity,
    extract_sids,
    sid_extension_value,
)
from scep_server.ca.issue import build_certificate
from scep_server.ca.policy import IssuancePolicy
from scep_server.config import CAConfig, ChallengeConfig, ProfileConfig, load_config
from scep_server.errors import BadRequest, ConfigError
from scep_server.pki.names import named_like, printable
from scep_server.pki.usages import CERTIFICATE_REQUEST_AGENT
from tests.support.pki import key_usage as usage

from .support import NOW, leaf_key

SID = "S-1-5-21-1004336348-1177238915-682003330-512"
SID_URI = f"tag:microsoft.com,2022-09-14:sid:{SID}"
OTHER_SID = "S-1-5-21-1004336348-1177238915-682003330-500"
CA_SUBJECT = "CN=Policy Test CA,O=scep-server tests"
DANGEROUS = {
    "any_extended_key_usage": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    "certificate_request_agent": CERTIFICATE_REQUEST_AGENT,
    "smartcard_logon": ExtendedKeyUsageOID.SMARTCARD_LOGON,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "pkinit_client_auth": x509.ObjectIdentifier("1.3.6.1.5.2.3.4"),
    "pkinit_kdc": ExtendedKeyUsageOID.KERBEROS_PKINIT_KDC,
}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    config = CAConfig(subject=CA_SUBJECT, key_type="ec", curve="P-256")
    return init_ca(tmp_path_factory.mktemp("ca") / "ca", config, None, now=NOW)


def static(**changes: Any) -> IssuancePolicy:
    return IssuancePolicy.from_profile(ProfileConfig(**changes), crl_url=None, ca_issuers_url=None)


def intune(**changes: Any) -> IssuancePolicy:
    profile = ProfileConfig(challenge=ChallengeConfig(type="intune"), **changes)
    return IssuancePolicy.from_profile(profile, crl_url=None, ca_issuers_url=None)


def csr(
    subject: str | x509.Name = "CN=device-1,O=Example",
    sans: list[x509.GeneralName] | None = None,
    ekus: list[x509.ObjectIdentifier] | None = None,
    key_usage: x509.KeyUsage | None = None,
    sid: str | None = None,
    key: Any = None,
) -> x509.CertificateSigningRequest:
    name = subject if isinstance(subject, x509.Name) else x509.Name.from_rfc4514_string(subject)
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if sid is not None:
        builder = builder.add_extension(sid_extension_value(sid), critical=False)
    return builder.sign(key or leaf_key(), hashes.SHA256())


def cn(value: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


def issued_ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def refused(
    request: x509.CertificateSigningRequest, policy: IssuancePolicy, ca: CertificateAuthority, match: str
) -> None:
    """Both gates refuse: check_csr (as the server calls it) and build_certificate on its own."""
    with pytest.raises(BadRequest, match=match):
        check_csr(request, policy, ca=ca)
    with pytest.raises(BadRequest, match=match):
        build_certificate(request, ca, policy, now=NOW)


# --- SIDs ---------------------------------------------------------------------------------------


def test_finding2_sid_uri_san_refused(ca: CertificateAuthority) -> None:
    request = csr(sans=[x509.DNSName("pc.example"), x509.UniformResourceIdentifier(SID_URI)])
    refused(request, static(), ca, "SID in a tag:microsoft.com,2022-09-14:sid: URI.*allow_sid_extension")
    refused(request, intune(), ca, "allow_sid_extension")


def test_finding2_sid_uri_san_refused_whatever_its_case(ca: CertificateAuthority) -> None:
    request = csr(sans=[x509.UniformResourceIdentifier(SID_URI.upper())])
    refused(request, static(), ca, "allow_sid_extension")


def test_finding2_sid_uri_san_allowed_when_sid_allowed(ca: CertificateAuthority) -> None:
    cert = build_certificate(csr(sans=[x509.UniformResourceIdentifier(SID_URI)]), ca, static(allow_sid_extension=True),
                             now=NOW)
    assert extract_sids(cert) == (SID,)


def test_finding2_sid_uri_governed_by_allow_sid_not_by_uri_type(ca: CertificateAuthority) -> None:
    policy = static(allow_sid_extension=True, allowed_san_types=("dns",))
    build_certificate(csr(sans=[x509.UniformResourceIdentifier(SID_URI)]), ca, policy, now=NOW)
    refused(csr(sans=[x509.UniformResourceIdentifier("IntuneDeviceId://1")]), policy, ca, "uri subjectAltNames")


def test_finding2_sid_extension_refused_unless_allowed(ca: CertificateAuthority) -> None:
    refused(csr(sid=SID), static(), ca, "SID extension.*allow_sid_extension")
    cert = build_certificate(csr(sid=SID), ca, static(allow_sid_extension=True), now=NOW)
    assert cert.extensions.get_extension_for_oid(SID_EXTENSION_OID).value == sid_extension_value(SID)


def test_finding2_extract_sids_reads_both_forms() -> None:
    request = csr(sans=[x509.UniformResourceIdentifier(f"tag:microsoft.com,2022-09-14:sid:{OTHER_SID}")], sid=SID)
    assert extract_sids(request) == (SID, OTHER_SID)
    assert extract_sids(csr(sans=[x509.UniformResourceIdentifier(SID_URI)], sid=SID)) == (SID,)
    assert extract_sids(csr()) == ()


def test_finding2_two_different_sids_refused(ca: CertificateAuthority) -> None:
    request = csr(sans=[x509.UniformResourceIdentifier(f"tag:microsoft.com,2022-09-14:sid:{OTHER_SID}")], sid=SID)
    refused(request, static(allow_sid_extension=True), ca, "more than one SID")


@pytest.mark.parametrize("sid", ["S-1-5-21-x", "not-a-sid", "S-1"])
def test_finding2_malformed_sid_refused(ca: CertificateAuthority, sid: str) -> None:
    refused(csr(sid=sid), static(allow_sid_extension=True), ca, "not a Windows SID")
    uri = x509.UniformResourceIdentifier(f"tag:microsoft.com,2022-09-14:sid:{sid}")
    refused(csr(sans=[uri]), static(allow_sid_extension=True), ca, "not a Windows SID")


def test_finding2_unreadable_sid_extension_refused(ca: CertificateAuthority) -> None:
    truncated = x509.UnrecognizedExtension(SID_EXTENSION_OID, bytes.fromhex("3040a03e060a2b0601040182371902"))
    request = x509.CertificateSigningRequestBuilder().subject_name(cn("pc")).add_extension(truncated, False).sign(
        leaf_key(), hashes.SHA256()
    )
    refused(request, static(allow_sid_extension=True), ca, "SID extension .* is malformed")


# --- EKUs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DANGEROUS))
@pytest.mark.parametrize("make_policy", [static, intune], ids=["static", "intune"])
def test_finding2_dangerous_eku_refused(ca: CertificateAuthority, name: str, make_policy: Any) -> None:
    request = csr(ekus=[ExtendedKeyUsageOID.CLIENT_AUTH, DANGEROUS[name]])
    refused(request, make_policy(), ca, f"{DANGEROUS[name].dotted_string}.*allowed_extended_key_usages")


@pytest.mark.parametrize("name", list(DANGEROUS))
@pytest.mark.parametrize("make_policy", [static, intune], ids=["static", "intune"])
def test_finding2_dangerous_eku_allowed_when_listed(ca: CertificateAuthority, name: str, make_policy: Any) -> None:
    request = csr(ekus=[ExtendedKeyUsageOID.CLIENT_AUTH, DANGEROUS[name]])
    cert = build_certificate(request, ca, make_policy(allowed_extended_key_usages=(name,)), now=NOW)
    assert issued_ekus(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH, DANGEROUS[name]]
    by_oid = make_policy(allowed_extended_key_usages=(DANGEROUS[name].dotted_string,))
    assert issued_ekus(build_certificate(request, ca, by_oid, now=NOW))[1] == DANGEROUS[name]


@pytest.mark.parametrize("eku", [ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.SERVER_AUTH])
def test_finding2_code_signing_and_server_auth_refused_on_static_default(
    ca: CertificateAuthority, eku: x509.ObjectIdentifier
) -> None:
    refused(csr(ekus=[eku]), static(), ca, f"{eku.dotted_string}.*grants client_auth.*allowed_extended_key_usages")
    listed = static(allowed_extended_key_usages=("code_signing", "server_auth"))
    assert issued_ekus(build_certificate(csr(ekus=[eku]), ca, listed, now=NOW)) == [eku]


def test_finding2_client_auth_allowed(ca: CertificateAuthority) -> None:
    request = csr(ekus=[ExtendedKeyUsageOID.CLIENT_AUTH])
    check_csr(request, static(), ca=ca)
    assert issued_ekus(build_certificate(request, ca, static(), now=NOW)) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_finding2_no_eku_requested_gets_client_auth_not_every_purpose(ca: CertificateAuthority) -> None:
    assert issued_ekus(build_certificate(csr(), ca, static(), now=NOW)) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize(
    "eku",
    [x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6"), ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CODE_SIGNING],
)
def test_finding2_intune_keeps_the_ekus_intune_validated(ca: CertificateAuthority, eku: x509.ObjectIdentifier) -> None:
    # Intune answers EnhancedKeyUsageMismatch unless the CSR carries the Intune profile's EKUs (TestMatrix: IPsec).
    assert issued_ekus(build_certificate(csr(ekus=[eku]), ca, intune(), now=NOW)) == [eku]


def test_finding2_forced_ekus_ignore_the_request(ca: CertificateAuthority) -> None:
    request = csr(ekus=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    cert = build_certificate(request, ca, static(extended_key_usage=("client_auth",)), now=NOW)
    assert issued_ekus(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]


# --- subjectAltNames ----------------------------------------------------------------------------


def dns_names(count: int) -> list[x509.GeneralName]:
    return [x509.DNSName(f"host-{index}.example.com") for index in range(count)]


def test_finding2_6000_sans_refused(ca: CertificateAuthority) -> None:
    message = "6000 subjectAltNames: this profile allows at most 20 \\(max_sans\\)"
    refused(csr(sans=dns_names(6000)), static(), ca, message)


def test_finding2_more_than_20_sans_refused(ca: CertificateAuthority) -> None:
    refused(csr(sans=dns_names(21)), static(), ca, "21 subjectAltNames")
    cert = build_certificate(csr(sans=dns_names(20)), ca, static(), now=NOW)
    assert len(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == 20
    build_certificate(csr(sans=dns_names(21)), ca, static(max_sans=21), now=NOW)


def test_finding2_san_types_outside_the_allow_list_refused(ca: CertificateAuthority) -> None:
    policy = static(allowed_san_types=("dns", "upn"))
    refused(csr(sans=[x509.RFC822Name("a@example.com")]), policy, ca, "email subjectAltNames are not allowed")
    refused(csr(sans=[x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]), policy, ca, "allowed_san_types: dns, upn")
    build_certificate(csr(sans=[x509.DNSName("a.example")]), ca, policy, now=NOW)


def test_finding2_ip_network_san_refused(ca: CertificateAuthority) -> None:
    network = x509.IPAddress(ipaddress.ip_network("192.0.2.0/24"))
    refused(csr(sans=[network]), static(), ca, "one address, not a network")


def test_finding2_long_san_refused(ca: CertificateAuthority) -> None:
    refused(csr(sans=[x509.DNSName("a" * 250 + ".example")]), static(), ca, "258 characters.*max_san_length")
    build_certificate(csr(sans=[x509.DNSName("a" * 50 + ".example")]), ca, static(), now=NOW)


def test_finding2_long_subject_refused(ca: CertificateAuthority) -> None:
    long_subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"unit-{n:03}") for n in range(60)])
    message = "characters: this profile allows at most 512 \\(max_subject_length\\)"
    refused(csr(subject=long_subject), static(), ca, message)
    build_certificate(csr(subject=long_subject), ca, static(max_subject_length=1024), now=NOW)


# --- control characters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("char", "shown"),
    [("\x1b", "U\\+001B \\(ESC\\)"), ("\r", "CR"), ("\n", "LF"), ("\x00", "NUL"), ("\x7f", "DEL"),
     ("\x9b", "U\\+009B"), ("\u202e", "RIGHT-TO-LEFT OVERRIDE"), ("\u2028", "LINE SEPARATOR")],
)
def test_finding2_control_characters_in_cn_refused(ca: CertificateAuthority, char: str, shown: str) -> None:
    subject = cn(f"device{char}[31mroot")
    refused(csr(subject=subject), static(), ca, f"subject attribute CN contains the control character .*{shown}")


def test_finding2_esc_cr_lf_in_cn_refused(ca: CertificateAuthority) -> None:
    refused(csr(subject=cn("alice\x1b[2J\r\nCN=Administrator")), static(), ca, "control character U\\+001B")


def test_finding2_control_characters_in_other_attributes_refused(ca: CertificateAuthority) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pc"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "a\nb")])
    refused(csr(subject=subject), static(), ca, "subject attribute OU contains the control character U\\+000A")


@pytest.mark.parametrize(
    "san",
    [x509.DNSName("pc\r.example"), x509.RFC822Name("a\x1b@example.com"),
     x509.UniformResourceIdentifier("IntuneDeviceId://\n1"),
     x509.OtherName(UPN_OID, core.UTF8String("alice\x1b[0m@example.com").dump())],
    ids=["dns", "email", "uri", "upn"],
)
def test_finding2_control_characters_in_sans_refused(ca: CertificateAuthority, san: x509.GeneralName) -> None:
    refused(csr(sans=[san]), static(), ca, "subjectAltName contains the control character")


def test_finding2_international_names_are_printable(ca: CertificateAuthority) -> None:
    cert = build_certificate(csr(subject=cn("Jürgen Müller – 東京")), ca, static(), now=NOW)
    assert cert.subject == cn("Jürgen Müller – 東京")


def test_finding2_printable_escapes_control_characters_for_display() -> None:
    assert printable("CN=a\x1b[31mb\r\n") == "CN=a\\1B[31mb\\0D\\0A"
    assert printable("CN=\u202eevil") == "CN=\\E2\\80\\AEevil"
    assert printable("CN=Jürgen\\, Ltd.") == "CN=Jürgen\\, Ltd."
    assert x509.Name.from_rfc4514_string(printable("CN=a\x1bb")) == cn("a\x1bb")  # still RFC 4514


# --- named like the CA --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [CA_SUBJECT, "CN=policy test ca,O=SCEP-SERVER tests", "CN=Policy  Test CA", "CN=Policy Test CA,O=Evil Corp",
     "CN=scep-server RA,O=Elsewhere"],
)
def test_finding2_leaf_named_like_the_ca_refused(ca: CertificateAuthority, subject: str) -> None:
    refused(csr(subject=subject), static(), ca, "named like the CA's own certificate")


def test_finding2_leaf_named_like_the_root_refused(ca: CertificateAuthority, tmp_path: Path) -> None:
    root = init_ca(tmp_path / "root", CAConfig(subject="CN=Example Root,O=Example", key_type="ec"), None, now=NOW)
    subordinate = dataclasses.replace(ca, chain=(root.ca_cert,))
    request = csr(subject="CN=Example Root,O=Example")
    with pytest.raises(BadRequest, match="named like the CA's own certificate 'CN=Example Root,O=Example'"):
        build_certificate(request, subordinate, static(), now=NOW)
    build_certificate(request, ca, static(), now=NOW)  # not in this CA's chain


def test_finding2_names_sharing_only_the_organisation_are_fine(ca: CertificateAuthority) -> None:
    build_certificate(csr(subject="CN=device-7,O=scep-server tests"), ca, static(), now=NOW)
    assert named_like(cn("Policy Test CA device"), [ca.ca_cert.subject]) is None


# --- renewal (finding 11) -----------------------------------------------------------------------


def current(ca: CertificateAuthority, policy: IssuancePolicy, **kwargs: Any) -> x509.Certificate:
    return build_certificate(csr(**kwargs), ca, policy, now=NOW)


def test_finding11_renewal_keeping_the_identity_accepted(ca: CertificateAuthority) -> None:
    sans: list[x509.GeneralName] = [x509.DNSName("pc.example"), x509.UniformResourceIdentifier(SID_URI)]
    policy = static(allow_sid_extension=True)
    old = current(ca, policy, sans=sans, sid=SID)
    check_renewal_identity(csr(sans=list(reversed(sans)), sid=SID, key=leaf_key("rsa3072")), old, policy)
    # Asked nothing: matches the defaults the current certificate was given (clientAuth, digitalSignature).
    plain = current(ca, static(), key=leaf_key("P-256"))
    check_renewal_identity(csr(key=leaf_key("P-256")), plain, static())


def test_finding11_renewal_changing_key_usage_refused(ca: CertificateAuthority) -> None:
    old = current(ca, static(), key_usage=usage("digital_signature"))
    with pytest.raises(BadRequest, match="keep the key usage"):
        check_renewal_identity(csr(key_usage=usage("digital_signature", "content_commitment")), old, static())
    with pytest.raises(BadRequest, match="keep the key usage"):
        check_renewal_identity(csr(), old, static())  # the RSA default adds keyEncipherment
    forced = static(key_usage=("digital_signature",))
    check_renewal_identity(csr(key_usage=usage("key_agreement")), old, forced)


@pytest.mark.parametrize(
    ("old_form", "new_form"),
    [
        ({"sid": SID}, {"sid": OTHER_SID}),
        ({"sans": [x509.UniformResourceIdentifier(SID_URI)]},
         {"sans": [x509.UniformResourceIdentifier(f"tag:microsoft.com,2022-09-14:sid:{OTHER_SID}")]}),
        ({"sid": SID}, {}),
        ({}, {"sid": SID}),
    ],
    ids=["extension", "uri", "dropped", "added"],
)
def test_finding11_renewal_changing_sid_refused(
    ca: CertificateAuthority, old_form: dict[str, Any], new_form: dict[str, Any]
) -> None:
    policy = static(allow_sid_extension=True)
    old = current(ca, policy, **old_form)
    with pytest.raises(BadRequest, match="keep the (SID|subjectAltNames)"):
        check_renewal_identity(csr(**new_form), old, policy)


def test_finding11_renewal_moving_the_sid_between_forms_is_the_same_sid(ca: CertificateAuthority) -> None:
    policy = static(allow_sid_extension=True)
    old = current(ca, policy, sid=SID, sans=[x509.DNSName("pc.example")])
    check_renewal_identity(csr(sid=SID.lower(), sans=[x509.DNSName("pc.example")]), old, policy)


def test_finding11_renewal_changing_subject_sans_or_ekus_refused(ca: CertificateAuthority) -> None:
    old = current(ca, static(), sans=[x509.DNSName("pc.example")])
    with pytest.raises(BadRequest, match="keep the subject"):
        check_renewal_identity(csr(subject="CN=Domain Admin", sans=[x509.DNSName("pc.example")]), old, static())
    with pytest.raises(BadRequest, match="keep the subjectAltNames"):
        check_renewal_identity(csr(sans=[x509.DNSName("dc.example")]), old, static())
    listed = static(allowed_extended_key_usages=("server_auth",))
    with pytest.raises(BadRequest, match="keep the extended key usages"):
        check_renewal_identity(csr(sans=[x509.DNSName("pc.example")], ekus=[ExtendedKeyUsageOID.SERVER_AUTH]), old,
                               listed)
    forced = static(extended_key_usage=("server_auth",))
    check_renewal_identity(csr(sans=[x509.DNSName("pc.example")], ekus=[ExtendedKeyUsageOID.SERVER_AUTH]), old, forced)


# --- configuration ------------------------------------------------------------------------------


def test_finding2_profile_settings_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "profiles:\n  hello:\n    allowed_extended_key_usages: [smartcard_logon, 1.3.6.1.5.5.7.3.6]\n"
        "    allowed_san_types: [upn]\n    max_sans: 2\n    max_subject_length: 100\n    max_san_length: 64\n"
        "    allow_sid_extension: true\n"
    )
    [profile] = load_config(path, env={}).profiles
    assert profile.allowed_extended_key_usages == ("smartcard_logon", "1.3.6.1.5.5.7.3.6")
    assert profile.allowed_san_types == ("upn",)
    assert (profile.max_sans, profile.max_subject_length, profile.max_san_length) == (2, 100, 64)
    defaults = load_config(None, env={}).profiles[0]
    assert defaults.allowed_extended_key_usages == () and defaults.max_sans == 20
    assert defaults.allowed_san_types == ("dns", "email", "upn", "uri", "ip") and not defaults.allow_sid_extension


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("allowed_extended_key_usages: [root_of_all_trust]", "allowed_extended_key_usages: unknown EKU"),
        ("allowed_extended_key_usages: client_auth", "allowed_extended_key_usages must be a list"),
        ("allowed_san_types: [dirname]", "allowed_san_types takes dns, email, upn, uri, ip"),
        ("max_sans: many", "max_sans must be an integer"),
        ("max_sans: 100000", "max_sans must be an integer from 0 to 1000"),
        ("max_subject_length: 0", "max_subject_length must be an integer"),
        ("max_san_length: true", "max_san_length must be an integer"),
        ("allow_sid_extension: maybe", "allow_sid_extension must be true or false"),
    ],
)
def test_finding2_profile_settings_are_validated(tmp_path: Path, setting: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"profiles:\n  p:\n    {setting}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})
