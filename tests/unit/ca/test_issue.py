"""Issuing a certificate for a checked request (scep_server/ca/issue.py): extensions, names, usages, URLs,
validity and hash, over every CA key type."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scep_server.ca.authority import CertificateAuthority, init_ca
from scep_server.ca.csr import (
    SID_EXTENSION_OID,
    check_csr,
    describe_sans,
    extract_sids,
    sid_extension_value,
)
from scep_server.ca.issue import build_certificate, thumbprints
from scep_server.errors import BadRequest, CAError

from .support import CA_KINDS, NOW, leaf_key, make_csr, policy, upn

SID_URI = "tag:microsoft.com,2022-09-14:sid:S-1-5-21-1004336348-1177238915-682003330-512"
_CAS: dict[str, CertificateAuthority] = {}


def cached_ca(kind: str, tmp: Path) -> CertificateAuthority:
    if kind not in _CAS:
        _CAS[kind] = init_ca(tmp / kind, CA_KINDS[kind], None, now=NOW - timedelta(days=1))
    return _CAS[kind]


@pytest.fixture(scope="module", params=list(CA_KINDS))
def ca(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return cached_ca(request.param, tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def rsa_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return cached_ca("rsa2048", tmp_path_factory.mktemp("ca"))


def ext_value(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> Any:
    return cert.extensions.get_extension_for_class(kind).value


def critical(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> bool:
    return cert.extensions.get_extension_for_class(kind).critical


def usage_names(cert: x509.Certificate) -> set[str]:
    ku = ext_value(cert, x509.KeyUsage)
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    flags = {name for name in names if getattr(ku, name)}
    return flags | {name for name in ("key_cert_sign", "crl_sign") if getattr(ku, name)}


# --- build_certificate ----------------------------------------------------------------------------


def test_certificate_basics(ca: CertificateAuthority) -> None:
    csr = make_csr(subject="CN=device-1,OU=Devices,O=Example")
    cert = build_certificate(csr, ca, policy(), now=NOW)
    assert cert.subject == csr.subject
    assert cert.issuer == ca.ca_cert.subject
    assert cert.public_key() == csr.public_key()
    cert.verify_directly_issued_by(ca.ca_cert)
    assert critical(cert, x509.BasicConstraints)
    assert ext_value(cert, x509.BasicConstraints) == x509.BasicConstraints(ca=False, path_length=None)
    assert critical(cert, x509.KeyUsage)
    assert ext_value(cert, x509.SubjectKeyIdentifier) == x509.SubjectKeyIdentifier.from_public_key(csr.public_key())
    ca_ski = ext_value(ca.ca_cert, x509.SubjectKeyIdentifier)
    assert ext_value(cert, x509.AuthorityKeyIdentifier).key_identifier == ca_ski.digest
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=60)
    assert cert.not_valid_after_utc == NOW + timedelta(days=365)
    assert 0 < cert.serial_number and cert.serial_number.bit_length() <= 160
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha256"
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)


def test_serials_are_random(rsa_ca: CertificateAuthority) -> None:
    csr = make_csr(leaf_key("P-256"))
    serials = {build_certificate(csr, rsa_ca, policy(), now=NOW).serial_number for _ in range(100)}
    assert len(serials) == 100
    assert all(0 < serial < 2**159 for serial in serials)
    assert max(serial.bit_length() for serial in serials) > 64


def test_sans_are_copied(rsa_ca: CertificateAuthority) -> None:
    sans: list[x509.GeneralName] = [
        x509.DNSName("device-1.example.com"),
        x509.RFC822Name("alice@example.com"),
        upn("alice@example.com"),
        x509.UniformResourceIdentifier("IntuneDeviceId://6f1a2b3c-0000-4000-8000-000000000001"),
        x509.UniformResourceIdentifier(SID_URI),
        x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    ]
    csr = make_csr(sans=sans)
    cert = build_certificate(csr, rsa_ca, policy(allow_sid_extension=True), now=NOW)
    assert list(ext_value(cert, x509.SubjectAlternativeName)) == sans
    assert not critical(cert, x509.SubjectAlternativeName)
    assert describe_sans(cert) == (
        "dns:device-1.example.com",
        "email:alice@example.com",
        "upn:alice@example.com",
        "uri:IntuneDeviceId://6f1a2b3c-0000-4000-8000-000000000001",
        f"uri:{SID_URI}",
        "ip:192.0.2.7",
        "ip:2001:db8::1",
    )
    assert describe_sans(csr) == describe_sans(cert)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        (x509.DirectoryName(x509.Name.from_rfc4514_string("CN=Administrator")), "dirname"),
        (x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")), "rid"),
        (x509.OtherName(x509.ObjectIdentifier("1.2.3.5"), core.UTF8String("x").dump()), "othername 1.2.3.5"),
    ],
)
def test_other_san_types_are_refused(rsa_ca: CertificateAuthority, name: x509.GeneralName, kind: str) -> None:
    csr = make_csr(sans=[x509.DNSName("a.example"), name])
    assert describe_sans(csr)[0] == "dns:a.example"
    with pytest.raises(BadRequest, match=f"type {kind} is not supported"):
        check_csr(csr, policy())
    with pytest.raises(BadRequest, match="not supported"):
        build_certificate(csr, rsa_ca, policy(), now=NOW)


def test_empty_subject_makes_the_san_critical(rsa_ca: CertificateAuthority) -> None:
    cert = build_certificate(make_csr(subject="", sans=[upn("bob@example.com")]), rsa_ca, policy(), now=NOW)
    assert cert.subject == x509.Name([])
    assert critical(cert, x509.SubjectAlternativeName)


def test_no_san_without_requested_names(rsa_ca: CertificateAuthority) -> None:
    cert = build_certificate(make_csr(), rsa_ca, policy(), now=NOW)
    assert describe_sans(cert) == ()


def sid_extension() -> x509.UnrecognizedExtension:
    return sid_extension_value("S-1-5-21-1004336348-1177238915-682003330-512")


def test_sid_extension_refused_by_default(rsa_ca: CertificateAuthority) -> None:
    csr = make_csr(extensions=[(sid_extension(), False)])
    with pytest.raises(BadRequest, match="SID extension.*allow_sid_extension"):
        check_csr(csr, policy())
    with pytest.raises(BadRequest, match="allow_sid_extension"):
        build_certificate(csr, rsa_ca, policy(), now=NOW)


def test_sid_extension_copied_when_allowed(rsa_ca: CertificateAuthority) -> None:
    csr = make_csr(extensions=[(sid_extension(), False)])
    cert = build_certificate(csr, rsa_ca, policy(allow_sid_extension=True), now=NOW)
    copied = cert.extensions.get_extension_for_oid(SID_EXTENSION_OID)
    assert copied.value == sid_extension() and not copied.critical
    assert extract_sids(cert) == ("S-1-5-21-1004336348-1177238915-682003330-512",)


def test_other_csr_extensions_are_ignored(rsa_ca: CertificateAuthority) -> None:
    requested: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")], excluded_subtrees=None), True),
        (x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00"), False),
        (x509.SubjectKeyIdentifier(b"\x01" * 20), False),
    ]
    cert = build_certificate(make_csr(extensions=requested), rsa_ca, policy(), now=NOW)
    assert ext_value(cert, x509.BasicConstraints).ca is False
    assert ext_value(cert, x509.SubjectKeyIdentifier).digest != b"\x01" * 20
    oids = {extension.oid.dotted_string for extension in cert.extensions}
    assert "1.2.3.4.5" not in oids
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.NameConstraints)


def key_usage(**flags: bool) -> x509.KeyUsage:
    names = (
        "digital_signature content_commitment key_encipherment data_encipherment key_agreement "
        "key_cert_sign crl_sign encipher_only decipher_only"
    ).split()
    return x509.KeyUsage(**{name: flags.get(name, False) for name in names})


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("rsa", {"digital_signature", "key_encipherment"}), ("P-256", {"digital_signature"})],
)
def test_key_usage_default(rsa_ca: CertificateAuthority, kind: str, expected: set[str]) -> None:
    cert = build_certificate(make_csr(leaf_key(kind)), rsa_ca, policy(), now=NOW)
    assert usage_names(cert) == expected


def test_key_usage_from_the_csr_without_ca_bits(rsa_ca: CertificateAuthority) -> None:
    requested = key_usage(digital_signature=True, content_commitment=True, key_cert_sign=True, crl_sign=True)
    cert = build_certificate(make_csr(extensions=[(requested, True)]), rsa_ca, policy(), now=NOW)
    assert usage_names(cert) == {"digital_signature", "content_commitment"}


def test_key_usage_forced_by_the_profile(rsa_ca: CertificateAuthority) -> None:
    requested = key_usage(digital_signature=True, content_commitment=True)
    forced = policy(key_usage=("key_encipherment",))
    cert = build_certificate(make_csr(extensions=[(requested, True)]), rsa_ca, forced, now=NOW)
    assert usage_names(cert) == {"key_encipherment"}


def test_key_usage_for_ec_never_has_encipherment(rsa_ca: CertificateAuthority) -> None:
    forced = policy(key_usage=("digital_signature", "key_encipherment"))
    cert = build_certificate(make_csr(leaf_key("P-256")), rsa_ca, forced, now=NOW)
    assert usage_names(cert) == {"digital_signature"}
    requested = key_usage(key_encipherment=True, key_agreement=True)
    cert = build_certificate(make_csr(leaf_key("P-256"), extensions=[(requested, True)]), rsa_ca, policy(), now=NOW)
    assert usage_names(cert) == {"key_agreement"}


def test_key_usage_forced_empty_omits_the_extension(rsa_ca: CertificateAuthority) -> None:
    cert = build_certificate(make_csr(), rsa_ca, policy(key_usage=()), now=NOW)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.KeyUsage)


def test_eku_defaults_to_client_auth_unless_intune(rsa_ca: CertificateAuthority) -> None:
    # Without extendedKeyUsage a certificate would be good for every purpose.
    cert = build_certificate(make_csr(), rsa_ca, policy(), now=NOW)
    assert list(ext_value(cert, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = build_certificate(make_csr(), rsa_ca, policy(intune_validated=True), now=NOW)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


def test_eku_from_the_csr_as_intune_validated_it(rsa_ca: CertificateAuthority) -> None:
    requested = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, x509.ObjectIdentifier("1.2.3.4")])
    csr = make_csr(extensions=[(requested, False)])
    cert = build_certificate(csr, rsa_ca, policy(intune_validated=True), now=NOW)
    assert list(ext_value(cert, x509.ExtendedKeyUsage)) == [
        ExtendedKeyUsageOID.CLIENT_AUTH,
        x509.ObjectIdentifier("1.2.3.4"),
    ]
    assert not critical(cert, x509.ExtendedKeyUsage)
    with pytest.raises(BadRequest, match="1.2.3.4"):
        build_certificate(csr, rsa_ca, policy(), now=NOW)
    listed = policy(allowed_extended_key_usages=("1.2.3.4",))
    assert list(ext_value(build_certificate(csr, rsa_ca, listed, now=NOW), x509.ExtendedKeyUsage))[1].dotted_string \
        == "1.2.3.4"


def test_eku_ocsp_signing_is_refused_even_for_intune(rsa_ca: CertificateAuthority) -> None:
    requested = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.OCSP_SIGNING])
    with pytest.raises(BadRequest, match="OCSP Signing.*allowed_extended_key_usages"):
        build_certificate(make_csr(extensions=[(requested, False)]), rsa_ca, policy(intune_validated=True), now=NOW)


def test_eku_forced_by_the_profile(rsa_ca: CertificateAuthority) -> None:
    requested = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING])
    forced = policy(extended_key_usage=("client_auth", "smartcard_logon", "1.3.6.1.5.5.7.3.9"))
    cert = build_certificate(make_csr(extensions=[(requested, False)]), rsa_ca, forced, now=NOW)
    assert list(ext_value(cert, x509.ExtendedKeyUsage)) == [
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.SMARTCARD_LOGON,
        ExtendedKeyUsageOID.OCSP_SIGNING,
    ]


def test_urls(rsa_ca: CertificateAuthority) -> None:
    with_urls = policy(crl_url="http://pki.example/crl/ca.crl", ca_issuers_url="http://pki.example/ca.cer")
    cert = build_certificate(make_csr(), rsa_ca, with_urls, now=NOW)
    [point] = ext_value(cert, x509.CRLDistributionPoints)
    assert point.full_name == [x509.UniformResourceIdentifier("http://pki.example/crl/ca.crl")]
    [access] = ext_value(cert, x509.AuthorityInformationAccess)
    assert access.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    assert access.access_location == x509.UniformResourceIdentifier("http://pki.example/ca.cer")


def test_ocsp_url_comes_first_in_aia(rsa_ca: CertificateAuthority) -> None:
    with_urls = policy(ocsp_url="http://pki.example/ocsp", ca_issuers_url="http://pki.example/ca.cer")
    cert = build_certificate(make_csr(), rsa_ca, with_urls, now=NOW)
    ocsp_access, issuers = ext_value(cert, x509.AuthorityInformationAccess)
    assert ocsp_access.access_method == AuthorityInformationAccessOID.OCSP
    assert ocsp_access.access_location == x509.UniformResourceIdentifier("http://pki.example/ocsp")
    assert issuers.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    assert issuers.access_location == x509.UniformResourceIdentifier("http://pki.example/ca.cer")
    assert not critical(cert, x509.AuthorityInformationAccess)  # RFC 5280 §4.2.2.1


def test_ocsp_url_without_ca_issuers(rsa_ca: CertificateAuthority) -> None:
    cert = build_certificate(make_csr(), rsa_ca, policy(ocsp_url="http://pki.example/ocsp"), now=NOW)
    [access] = ext_value(cert, x509.AuthorityInformationAccess)
    assert access.access_method == AuthorityInformationAccessOID.OCSP
    assert access.access_location == x509.UniformResourceIdentifier("http://pki.example/ocsp")


def test_no_aia_without_urls(rsa_ca: CertificateAuthority) -> None:
    cert = build_certificate(make_csr(), rsa_ca, policy(), now=NOW)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)


def test_not_after_is_capped_by_the_ca(ca: CertificateAuthority) -> None:
    now = ca.ca_cert.not_valid_after_utc - timedelta(days=10)
    cert = build_certificate(make_csr(), ca, policy(), now=now)
    assert cert.not_valid_after_utc == ca.ca_cert.not_valid_after_utc


def test_not_after_cap(rsa_ca: CertificateAuthority) -> None:
    cap = NOW + timedelta(days=30)
    cert = build_certificate(make_csr(), rsa_ca, policy(), now=NOW, not_after_cap=cap)
    assert cert.not_valid_after_utc == cap
    with pytest.raises(BadRequest, match="expire before"):
        build_certificate(make_csr(), rsa_ca, policy(), now=NOW, not_after_cap=NOW - timedelta(days=1))


def test_not_before_is_backdated_but_not_before_the_ca(rsa_ca: CertificateAuthority) -> None:
    cert = build_certificate(make_csr(), rsa_ca, policy(backdate=timedelta(hours=3)), now=NOW)
    assert cert.not_valid_before_utc == NOW - timedelta(hours=3)
    cert = build_certificate(make_csr(), rsa_ca, policy(backdate=timedelta(days=30)), now=NOW)
    assert cert.not_valid_before_utc == rsa_ca.ca_cert.not_valid_before_utc


def test_expired_ca_refuses_to_issue(rsa_ca: CertificateAuthority) -> None:
    with pytest.raises(CAError, match="expired"):
        build_certificate(make_csr(), rsa_ca, policy(), now=rsa_ca.ca_cert.not_valid_after_utc + timedelta(seconds=1))


@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_hash_is_honoured(ca: CertificateAuthority, hash_name: str) -> None:
    cert = build_certificate(make_csr(), ca, policy(hash_name=hash_name), now=NOW)
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == hash_name
    cert.verify_directly_issued_by(ca.ca_cert)


def test_sha1_is_honoured(ca: CertificateAuthority) -> None:
    csr = make_csr(sans=[upn("carol@example.com"), x509.DNSName("c.example")])
    cert = build_certificate(csr, ca, policy(hash_name="sha1"), now=NOW)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA1)
    assert cert.signature_algorithm_oid.dotted_string in ("1.2.840.113549.1.1.5", "1.2.840.10045.4.1")
    public = ca.ca_cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA1())
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA1()))
    assert describe_sans(cert) == ("upn:carol@example.com", "dns:c.example")
    assert ext_value(cert, x509.BasicConstraints).ca is False


def test_thumbprints(rsa_ca: CertificateAuthority) -> None:
    cert = build_certificate(make_csr(), rsa_ca, policy(), now=NOW)
    sha1, sha256 = thumbprints(cert)
    assert sha1 == cert.fingerprint(hashes.SHA1()).hex().upper() and len(sha1) == 40
    assert sha256 == cert.fingerprint(hashes.SHA256()).hex().upper() and len(sha256) == 64


def test_subject_string_types_are_kept(rsa_ca: CertificateAuthority) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Jürgen"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "C02XYZ"),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(leaf_key(), hashes.SHA256())
    cert = build_certificate(csr, rsa_ca, policy(), now=NOW)
    assert cert.subject == subject
    assert cert.subject.public_bytes() == csr.subject.public_bytes()


# --- property test over random SAN sets ----------------------------------------------------------

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_dns = st.lists(_label, min_size=1, max_size=4).map(lambda labels: x509.DNSName(".".join(labels)))
_email = st.tuples(_label, _label).map(lambda parts: x509.RFC822Name(f"{parts[0]}@{parts[1]}.example"))
_printable_text = st.text(st.characters(exclude_categories=("Cc", "Cs", "Cf", "Zl", "Zp")), min_size=1, max_size=20)
_upn = st.tuples(_printable_text, _label).map(lambda parts: upn(f"{parts[0]}@{parts[1]}"))
_uri = st.one_of(
    st.uuids().map(lambda u: x509.UniformResourceIdentifier(f"IntuneDeviceId://{u}")),
    st.integers(0, 2**32 - 1).map(
        lambda n: x509.UniformResourceIdentifier(f"tag:microsoft.com,2022-09-14:sid:S-1-5-21-{n}")
    ),
)
_ip = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(x509.IPAddress)
_sans = st.lists(st.one_of(_dns, _email, _upn, _uri, _ip), min_size=1, max_size=8, unique=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sans=_sans, empty_subject=st.booleans())
def test_random_san_sets_survive_issuance(
    rsa_ca: CertificateAuthority, sans: list[x509.GeneralName], empty_subject: bool
) -> None:
    csr = make_csr(leaf_key("P-256"), subject="" if empty_subject else "CN=x", sans=sans)
    assume(len(extract_sids(csr)) <= 1)  # one SID per certificate
    check_csr(csr, policy(allow_sid_extension=True))
    cert = build_certificate(csr, rsa_ca, policy(allow_sid_extension=True), now=NOW)
    assert list(ext_value(cert, x509.SubjectAlternativeName)) == sans
    assert describe_sans(cert) == describe_sans(csr)
    assert len(describe_sans(cert)) == len(sans)
    assert critical(cert, x509.SubjectAlternativeName) is empty_subject
