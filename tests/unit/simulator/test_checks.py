"""checks.py against certificates built with cryptography: one that honours the profile, and one
deviation at a time."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from scep_server.ca.keys.local import LocalKey
from scep_server.ca.signing import sign_certificate
from scep_server.intune.contract import ChallengeSpec
from scep_server.simulator import checks
from tests.support.pki import CA

NOW = datetime.now(UTC).replace(microsecond=0)
UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
SPEC = ChallengeSpec(
    subject="CN=alice,O=Contoso\\, Ltd.",
    sans=(("upn", "alice@contoso.com"), ("dns", "pc.contoso.com"), ("uri", "IntuneDeviceId://42"),
          ("email", "a@contoso.com")),
    key_usage=("digital_signature", "key_encipherment"), extended_key_usage=(CLIENT_AUTH,), key_size=2048,
    validity_days=30,
)


def _key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Pki:
    root_key: rsa.RSAPrivateKey
    root: x509.Certificate
    ca_key: rsa.RSAPrivateKey
    ca: x509.Certificate
    leaf_key: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def pki() -> Pki:
    validity = {"usage": None, "not_before": NOW - timedelta(days=1), "not_after": NOW + timedelta(days=3650)}
    root = CA.root("Root", key=_key(), **validity)
    ca = root.child("Issuing CA", key=_key(), **validity)
    return Pki(root.key, root.cert, ca.key, ca.cert, _key())


def _sans() -> list[x509.GeneralName]:
    return [x509.OtherName(UPN_OID, core.UTF8String("alice@contoso.com").dump()), x509.DNSName("pc.contoso.com"),
            x509.UniformResourceIdentifier("IntuneDeviceId://42"), x509.RFC822Name("a@contoso.com")]


def _key_usage(**flags: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{name: flags.get(name, False) for name in names})


@dataclass(frozen=True)
class Leaf:
    """A certificate to build: the honest one by default, ``replace`` one field to deviate."""

    subject: x509.Name = x509.Name.from_rfc4514_string("CN=alice,O=Contoso\\, Ltd.")
    sans: tuple[x509.GeneralName, ...] = tuple(_sans())
    key_usage: x509.KeyUsage | None = _key_usage(digital_signature=True, key_encipherment=True)
    ekus: tuple[str, ...] = (CLIENT_AUTH,)
    not_before: datetime = NOW - timedelta(hours=1)
    lifetime: timedelta = timedelta(days=30, hours=1)
    hash_name: str = "sha256"
    ca: bool = False

    def build(self, pki: Pki, *, key: rsa.RSAPrivateKey | None = None, signer: rsa.RSAPrivateKey | None = None,
              issuer: x509.Name | None = None) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(self.subject)
                   .issuer_name(issuer or pki.ca.subject).public_key((key or pki.leaf_key).public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(self.not_before)
                   .not_valid_after(self.not_before + self.lifetime)
                   .add_extension(x509.BasicConstraints(ca=self.ca, path_length=None), critical=True))
        if self.sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(self.sans)), critical=False)
        if self.key_usage is not None:
            builder = builder.add_extension(self.key_usage, critical=True)
        if self.ekus:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.ObjectIdentifier(e) for e in self.ekus]), critical=False)
        return sign_certificate(builder, LocalKey(signer or pki.ca_key), self.hash_name)


def _expected(pki: Pki, **changes: object) -> checks.Expected:
    expected = checks.Expected.from_spec(SPEC, signature_hash="sha256", validity_days=30,
                                         ca_certificates=(pki.ca, pki.root), issued_at=NOW)
    return replace(expected, **changes)  # type: ignore[arg-type]


def test_a_certificate_that_honours_the_profile_passes(pki: Pki) -> None:
    assert checks.problems(Leaf().build(pki), _expected(pki)) == []


def test_sha1_signed_certificate_passes_when_the_profile_signs_with_sha1(pki: Pki) -> None:
    certificate = Leaf(hash_name="sha1").build(pki)
    assert checks.problems(certificate, _expected(pki, signature_hash="sha1")) == []
    assert checks.problems(certificate, _expected(pki)) == ["signed with sha1, expected sha256"]


def test_the_root_may_be_left_out_of_getcacert(pki: Pki) -> None:
    assert checks.problems(Leaf().build(pki), _expected(pki, ca_certificates=(pki.ca,))) == []


Deviation = Callable[[Pki], x509.Certificate]
DEVIATIONS: dict[str, tuple[Deviation, str]] = {
    "subject": (lambda p: Leaf(subject=x509.Name.from_rfc4514_string("CN=mallory")).build(p), "subject 'CN=mallory'"),
    "extra SAN": (lambda p: Leaf(sans=(*_sans(), x509.DNSName("evil.com"))).build(p), "SANs [dns:evil.com"),
    "missing SAN": (lambda p: Leaf(sans=()).build(p), "SANs [], expected"),
    "upn value": (lambda p: Leaf(sans=(x509.OtherName(UPN_OID, core.UTF8String("bob@contoso.com").dump()),
                                       *_sans()[1:])).build(p), "upn:bob@contoso.com"),
    "key usage": (lambda p: Leaf(key_usage=_key_usage(digital_signature=True)).build(p),
                  "key usage ['digital_signature']"),
    "no key usage": (lambda p: Leaf(key_usage=None).build(p), "key usage [], expected"),
    "eku": (lambda p: Leaf(ekus=("1.3.6.1.5.5.7.3.6",)).build(p), "EKU ['1.3.6.1.5.5.7.3.6']"),
    "key size": (lambda p: Leaf().build(p, key=_key(1024)), "key size 1024, expected 2048"),
    "hash": (lambda p: Leaf(hash_name="sha384").build(p), "signed with sha384, expected sha256"),
    "lifetime": (lambda p: Leaf(lifetime=timedelta(days=365)).build(p), "valid for 365.00 days, expected 30.00"),
    "expires early": (lambda p: Leaf(not_before=NOW - timedelta(days=3)).build(p), "expires"),
    "not yet valid": (lambda p: Leaf(not_before=NOW + timedelta(hours=2)).build(p), "not valid when issued"),
    "ca": (lambda p: Leaf(ca=True).build(p), "the certificate is a CA certificate"),
    "foreign issuer": (lambda p: Leaf().build(p, signer=_key()), "not issued by any GetCACert certificate"),
}


@pytest.mark.parametrize("case", list(DEVIATIONS))
def test_each_deviation_is_reported(pki: Pki, case: str) -> None:
    build, message = DEVIATIONS[case]
    found = checks.problems(build(pki), _expected(pki))
    assert len(found) == 1 and message in found[0], found


def test_every_deviation_is_reported_at_once(pki: Pki) -> None:
    certificate = Leaf(subject=_name("mallory"), sans=(), ekus=(), hash_name="sha512").build(pki)
    found = checks.problems(certificate, _expected(pki))
    assert [p.split(" ")[0] for p in found] == ["subject", "SANs", "EKU", "signed"]


def test_describe_name_keeps_unknown_kinds() -> None:
    assert checks.describe_name(x509.IPAddress(ipaddress.ip_address("10.0.0.1"))) == ("IPAddress", "10.0.0.1")
    assert checks.describe_name(x509.OtherName(UPN_OID, b"\x04\x01x"))[1].startswith("<not a string")
