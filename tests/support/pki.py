"""Certificates for tests, after trustme: a :class:`CA` issues leaves, signers and sub-CAs with the names,
keys, usages, subjectAltNames and validity a test asks for; :func:`csr` builds requests.

Built on pyca/cryptography's builders only. Everything not asked for is the plain, valid choice: a random
serial, SHA-256, valid from an hour ago for thirty days, basicConstraints on every CA and issued
certificate. A test that needs a deliberately odd certificate keeps a builder of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AttributeOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
SigningHash = hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512  # what the builders sign with
KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
              "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
CA_USAGE = ("digital_signature", "key_cert_sign", "crl_sign")
VALIDITY = timedelta(days=30)
BACKDATE = timedelta(hours=1)


class KeyType(StrEnum):
    """The key families the server handles (trustme's ``KeyType``)."""

    RSA = "rsa"
    P256 = "P-256"
    P384 = "P-384"


_CURVES = {KeyType.P256: ec.SECP256R1, KeyType.P384: ec.SECP384R1}


def new_key(key_type: KeyType = KeyType.RSA, *, bits: int = 2048) -> PrivateKey:
    """A fresh private key; ``bits`` is the RSA modulus size."""
    if key_type is KeyType.RSA:
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key(_CURVES[key_type]())


@cache
def shared_key(key_type: KeyType = KeyType.RSA, slot: int = 0) -> PrivateKey:
    """A key made once per (type, slot) for the whole session: RSA keys are slow to make."""
    return new_key(key_type)


def name(text: str) -> x509.Name:
    """``"CN=a,O=b"`` read as RFC 4514; anything without ``=`` is a bare common name."""
    if "=" in text:
        return x509.Name.from_rfc4514_string(text)
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def key_usage(*names: str) -> x509.KeyUsage:
    """A keyUsage with exactly the named bits set (``key_usage("digital_signature")``)."""
    unknown = set(names) - set(KEY_USAGES)
    if unknown:
        raise ValueError(f"unknown key usages: {sorted(unknown)}")
    return x509.KeyUsage(**{usage: usage in names for usage in KEY_USAGES})


def _named(value: x509.Name | str) -> x509.Name:
    return value if isinstance(value, x509.Name) else name(value)


@dataclass(frozen=True, slots=True)
class Profile:
    """What goes into a certificate besides its names and key; ``None`` leaves an extension out."""

    ca: bool | None = False
    path_length: int | None = None
    usage: x509.KeyUsage | None = None
    ekus: Sequence[x509.ObjectIdentifier] = ()
    sans: Sequence[x509.GeneralName] = ()
    key_identifier: bool = False
    not_before: datetime | None = None
    not_after: datetime | None = None
    serial: int | None = None

    def validity(self) -> tuple[datetime, datetime]:
        start = self.not_before or datetime.now(UTC) - BACKDATE
        return start, self.not_after or start + VALIDITY


def certificate_builder(
    subject: x509.Name | str, public_key: PublicKey, issuer: x509.Name | str | None = None, **profile: Any
) -> x509.CertificateBuilder:
    """The unsigned certificate: for code under test that signs builders itself. ``profile``: :class:`Profile`."""
    return _builder(_named(subject), public_key, _named(issuer or subject), Profile(**profile))


def _builder(subject: x509.Name, public_key: PublicKey, issuer: x509.Name, profile: Profile) -> x509.CertificateBuilder:
    not_before, not_after = profile.validity()
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
        .serial_number(profile.serial or x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
    )  # fmt: skip
    for extension, critical in _extensions(public_key, profile):
        builder = builder.add_extension(extension, critical=critical)
    return builder


def _extensions(public_key: PublicKey, profile: Profile) -> Iterable[tuple[x509.ExtensionType, bool]]:
    if profile.ca is not None:
        yield x509.BasicConstraints(ca=profile.ca, path_length=profile.path_length if profile.ca else None), True
    if profile.key_identifier:
        yield x509.SubjectKeyIdentifier.from_public_key(public_key), False
    if profile.usage is not None:
        yield profile.usage, True
    if profile.ekus:
        yield x509.ExtendedKeyUsage(list(profile.ekus)), False
    if profile.sans:
        yield x509.SubjectAlternativeName(list(profile.sans)), False


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key (trustme's ``LeafCert``)."""

    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted with ``password`` when one is given."""
        return private_pem(self.key, password)


def private_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def self_signed(
    subject: x509.Name | str, key: PrivateKey, *, hash_algorithm: SigningHash | None = None, **profile: Any
) -> x509.Certificate:
    """A certificate ``key`` signs for itself; no basicConstraints unless ``ca`` is given."""
    builder = _builder(_named(subject), key.public_key(), _named(subject), Profile(**{"ca": None, **profile}))
    return builder.sign(key, hash_algorithm or hashes.SHA256())


@dataclass(frozen=True, slots=True)
class CA:
    """A certificate authority for tests: ``CA.root()`` makes one, ``issue`` and ``child`` use it."""

    cert: x509.Certificate
    key: PrivateKey
    hash_algorithm: SigningHash = field(default_factory=hashes.SHA256)

    @classmethod
    def root(
        cls, subject: x509.Name | str = "CN=Test CA", *, key: PrivateKey | None = None,
        hash_algorithm: SigningHash | None = None, **profile: Any,
    ) -> CA:  # fmt: skip
        """A self-signed CA: basicConstraints CA, keyCertSign and cRLSign unless ``usage`` says otherwise."""
        key = key or new_key()
        algorithm = hash_algorithm or hashes.SHA256()
        options = {"ca": True, "usage": key_usage(*CA_USAGE), "not_after": _far(profile), **profile}
        return cls(self_signed(subject, key, hash_algorithm=algorithm, **options), key, algorithm)

    @property
    def subject(self) -> x509.Name:
        return self.cert.subject

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, subject: x509.Name | str, *, key: PrivateKey | None = None, key_type: KeyType = KeyType.RSA,
        hash_algorithm: SigningHash | None = None, **profile: Any,
    ) -> Issued:  # fmt: skip
        """A certificate for ``key`` (a new ``key_type`` key if None), signed by this CA; see :class:`Profile`."""
        key = key or new_key(key_type)
        options = Profile(**profile)
        builder = _builder(_named(subject), key.public_key(), self.subject, options)
        return Issued(builder.sign(self.key, hash_algorithm or self.hash_algorithm), key)

    def child(self, subject: x509.Name | str, *, key: PrivateKey | None = None, **profile: Any) -> CA:
        """A subordinate CA this CA issues (basicConstraints CA, keyCertSign, cRLSign by default)."""
        options = {"ca": True, "usage": key_usage(*CA_USAGE), "not_after": _far(profile), **profile}
        issued = self.issue(subject, key=key, **options)
        return CA(issued.cert, issued.key, self.hash_algorithm)


def _far(profile: dict[str, Any]) -> datetime:
    """CAs outlive what they issue: ten years from their start unless the test says otherwise."""
    start = profile.get("not_before")
    return (start if isinstance(start, datetime) else datetime.now(UTC) - BACKDATE) + timedelta(days=3650)


def csr(
    key: PrivateKey, subject: x509.Name | str = "", *, sans: Sequence[x509.GeneralName] = (),
    challenge: str | bytes | None = None, usage: x509.KeyUsage | None = None,
    ekus: Sequence[x509.ObjectIdentifier] = (), hash_algorithm: SigningHash | None = None,
) -> x509.CertificateSigningRequest:  # fmt: skip
    """A PKCS#10 request signed by ``key``; ``challenge`` becomes the challengePassword attribute."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(_named(subject) if subject else x509.Name([]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    if challenge is not None:
        value = challenge.encode() if isinstance(challenge, str) else challenge
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, value)
    return builder.sign(key, hash_algorithm or hashes.SHA256())
