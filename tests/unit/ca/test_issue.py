from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import algos, core
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scep_server.ca.authority import CertificateAuthority, init_ca
from scep_server.ca.csr import (
    SID_EXTENSION_OID,
    UPN_OID,
    check_csr,
    describe_sans,
    extract_sids,
    sid_extension_value,
)
from scep_server.ca.issue import build_certificate, thumbprints
from scep_server.ca.keys.generate import PrivateKey, generate_private_key
from scep_server.ca.policy import IssuancePolicy
from scep_server.config import ChallengeConfig, ProfileConfig
from scep_server.errors import BadAlg, BadMessageCheck, BadRequest, CAError

from .support import CA_KINDS, NOW

SID_URI = "tag:microsoft.com,2022-09-14:sid:S-1-5-21-1004336348-1177238915-682003330-512"
_KEYS: dict[str, PrivateKey] = {}
_CAS: dict[str, CertificateAuthority] = {}


def leaf_key(kind: str = "rsa") -> PrivateKey:
    if kind not in _KEYS:
        if kind.startswith("rsa"):
            _KEYS[kind] = rsa.generate_private_key(65537, int(kind[3:] or 2048))
        else:
            _KEYS[kind] = generate_private_key("ec", curve=kind)
    return _KEYS[kind]


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


def policy(**changes: Any) -> IssuancePolicy:
    base = IssuancePolicy.from_profile(ProfileConfig(), crl_url=None, ca_issuers_url=None)
    return dataclasses.replace(base, **changes)


def upn(text: str) -> x509.OtherName:
    return x509.OtherName(UPN_OID, core.UTF8String(text).dump())


def make_csr(
    key: Any = None,
    subject: str = "CN=device-1,O=Example",
    sans: list[x509.GeneralName] | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    algorithm: str | None = "sha256",
) -> x509.CertificateSigningRequest:
    key = leaf_key() if key is None else key
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name.from_rfc4514_string(subject))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256() if algorithm else None)


def resign_csr(
    csr: x509.CertificateSigningRequest, key: rsa.RSAPrivateKey, hash_name: str
) -> x509.CertificateSigningRequest:
    """The same CSR signed with a hash cryptography will not sign CSRs with (SHA-1, MD5)."""
    request = asn1_csr.CertificationRequest.load(csr.public_bytes(serialization.Encoding.DER))
    info = request["certification_request_info"]
    hash_class = {"sha1": hashes.SHA1, "md5": hashes.MD5}[hash_name]
    signature = key.sign(info.dump(), padding.PKCS1v15(), hash_class())
    algorithm = algos.SignedDigestAlgorithm({"algorithm": f"{hash_name}_rsa", "parameters": core.Null()})
    signed = asn1_csr.CertificationRequest(
        {"certification_request_info": info, "signature_algorithm": algorithm, "signature": signature}
    )
    return x509.load_der_x509_csr(signed.dump())


def ext_value(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> Any:
    return cert.extensions.get_extension_for_class(kind).value


def critical(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> bool:
    return cert.extensions.get_extension_for_class(kind).critical


def usage_names(cert: x509.Certificate) -> set[str]:
    ku = ext_value(cert, x509.KeyUsage)
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    flags = {name for name in names if getattr(ku, name)}
    return flags | {name for name in ("key_cert_sign", "crl_sign") if getattr(ku, name)}


# --- IssuancePolicy -------------------------------------------------------------------------------


def test_policy_from_profile() -> None:
    profile = ProfileConfig(
        validity_days=30,
        backdate_minutes=5,
        hash="sha384",
        allowed_key_types=("rsa",),
        allowed_curves=("P-256",),
        key_usage=("digital_signature",),
        extended_key_usage=("client_auth", "1.2.3.4"),
        allow_sid_extension=True,
    )
    got = IssuancePolicy.from_profile(profile, crl_url="http://x/crl", ca_issuers_url="http://x/ca")
    assert got.validity == timedelta(days=30) and got.backdate == timedelta(minutes=5)
    assert got.hash_name == "sha384"
    assert got.allowed_key_types == frozenset({"rsa"}) and got.allowed_curves == frozenset({"P-256"})
    assert (got.min_rsa_bits, got.max_rsa_bits) == (2048, 8192)
    assert got.key_usage == ("digital_signature",) and got.extended_key_usage == ("client_auth", "1.2.3.4")
    assert got.allow_sid_extension and got.crl_url == "http://x/crl" and got.ca_issuers_url == "http://x/ca"
    assert got.ocsp_url is None
    assert not got.intune_validated and got.allowed_extended_key_usages == ()
    assert got.allowed_san_types == frozenset({"dns", "email", "upn", "uri", "ip"})
    assert (got.max_sans, got.max_subject_length, got.max_san_length) == (20, 512, 256)
    intune = dataclasses.replace(
        profile, challenge=ChallengeConfig(type="intune"), allowed_extended_key_usages=("smartcard_logon",),
        allowed_san_types=("dns",), max_sans=3, max_subject_length=100, max_san_length=50,
    )
    got = IssuancePolicy.from_profile(intune, crl_url=None, ca_issuers_url=None)
    assert got.intune_validated and got.allowed_extended_key_usages == ("smartcard_logon",)
    assert got.allowed_san_types == frozenset({"dns"})
    assert (got.max_sans, got.max_subject_length, got.max_san_length) == (3, 100, 50)
    with_ocsp = IssuancePolicy.from_profile(profile, crl_url=None, ca_issuers_url=None, ocsp_url="http://x/ocsp")
    assert with_ocsp.ocsp_url == "http://x/ocsp"


@pytest.mark.parametrize(
    "changes",
    [
        {"hash_name": "md5"},
        {"key_usage": ("key_cert_sign",)},
        {"extended_key_usage": ("nope",)},
        {"validity": timedelta(0)},
        {"backdate": timedelta(minutes=-1)},
        {"min_rsa_bits": 4096, "max_rsa_bits": 2048},
        {"allowed_extended_key_usages": ("nope",)},
        {"allowed_san_types": frozenset({"dirname"})},
        {"max_sans": -1},
        {"max_subject_length": 0},
        {"max_san_length": 0},
    ],
)
def test_policy_rejects_nonsense(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        policy(**changes)


# --- check_csr ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa2048", "rsa4096", "P-256", "P-384", "P-521"])
def test_check_csr_accepts(kind: str) -> None:
    check_csr(make_csr(leaf_key(kind)), policy())


def test_check_csr_rejects_a_tampered_signature() -> None:
    der = bytearray(make_csr().public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01
    with pytest.raises(BadMessageCheck, match="signature does not verify"):
        check_csr(x509.load_der_x509_csr(bytes(der)), policy())


def test_check_csr_rejects_a_tampered_body() -> None:
    csr = make_csr(subject="CN=alice")
    der = csr.public_bytes(serialization.Encoding.DER).replace(b"alice", b"mallo")
    with pytest.raises(BadMessageCheck):
        check_csr(x509.load_der_x509_csr(der), policy())


def test_check_csr_rejects_small_rsa() -> None:
    with pytest.raises(BadRequest, match="1024 bits: this profile needs at least 2048"):
        check_csr(make_csr(leaf_key("rsa1024")), policy())


def test_check_csr_rejects_large_rsa() -> None:
    with pytest.raises(BadRequest, match="at most 2048"):
        check_csr(make_csr(leaf_key("rsa3072")), policy(max_rsa_bits=2048))


def test_check_csr_rejects_a_disallowed_curve() -> None:
    with pytest.raises(BadRequest, match="curve P-521 is not allowed"):
        check_csr(make_csr(leaf_key("P-521")), policy(allowed_curves=frozenset({"P-256", "P-384"})))
    with pytest.raises(BadRequest, match="curve secp256k1 is not allowed"):
        check_csr(make_csr(ec.generate_private_key(ec.SECP256K1())), policy())


def test_check_csr_rejects_a_disallowed_key_type() -> None:
    with pytest.raises(BadRequest, match="EC keys are not allowed by this profile \\(allowed: rsa\\)"):
        check_csr(make_csr(leaf_key("P-256")), policy(allowed_key_types=frozenset({"rsa"})))


def test_check_csr_rejects_ed25519_as_bad_alg() -> None:
    csr = make_csr(ed25519.Ed25519PrivateKey.generate(), algorithm=None)
    with pytest.raises(BadAlg, match="Ed25519 keys are not supported"):
        check_csr(csr, policy())


def test_check_csr_accepts_sha1_signatures() -> None:
    key = leaf_key()
    assert isinstance(key, rsa.RSAPrivateKey)
    csr = resign_csr(make_csr(key), key, "sha1")
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA1)
    check_csr(csr, policy())
    tampered = bytearray(csr.public_bytes(serialization.Encoding.DER))
    tampered[-5] ^= 0x01
    with pytest.raises(BadMessageCheck):
        check_csr(x509.load_der_x509_csr(bytes(tampered)), policy())


def test_check_csr_rejects_md5_signatures() -> None:
    key = leaf_key()
    assert isinstance(key, rsa.RSAPrivateKey)
    with pytest.raises(BadAlg, match="MD5"):
        check_csr(resign_csr(make_csr(key), key, "md5"), policy())


def test_check_csr_rejects_an_empty_subject_without_san() -> None:
    with pytest.raises(BadRequest, match="empty subject and no subjectAltName"):
        check_csr(make_csr(subject=""), policy())
    check_csr(make_csr(subject="", sans=[x509.DNSName("host.example")]), policy())


def test_check_csr_rejects_a_upn_that_is_not_a_string() -> None:
    bad = x509.OtherName(UPN_OID, core.Integer(5).dump())
    with pytest.raises(BadRequest, match="UPN"):
        check_csr(make_csr(sans=[bad]), policy())


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


def test_sid_extension_value_is_the_windows_encoding() -> None:
    # GeneralNames { [0] otherName { 1.3.6.1.4.1.311.25.2.1, [0] EXPLICIT OCTET STRING "S-1-5-21" } }
    assert sid_extension_value("S-1-5-21").value == bytes.fromhex(
        "301aa018060a2b060104018237190201a00a0408532d312d352d3231"
    )


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
