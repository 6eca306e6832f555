"""Does an issued certificate honour the SCEP profile the device was given? (intune-api.md §7)

Each check returns a problem (text naming what was expected and what arrived) or None; ``problems``
runs them all, so one report lists every deviation. Comparisons are exact: a certificate that carries
more SANs, usages or EKUs than the profile asked for is as wrong as one that carries fewer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from asn1crypto import core
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scep_server.intune.contract import ChallengeSpec
from scep_server.pki.chain import is_issued_by
from scep_server.pki.names import parse_name
from scep_server.pki.sans import UPN_OID

VALIDITY_TOLERANCE = timedelta(days=1)
KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
              "key_agreement", "key_cert_sign", "crl_sign")
MAX_CHAIN = 8
_E = TypeVar("_E", bound=x509.ExtensionType)


@dataclass(frozen=True, slots=True)
class Expected:
    """What the profile promises the device: names, usages, key, signature hash, validity, issuer."""

    subject: x509.Name
    sans: frozenset[tuple[str, str]]
    key_usage: frozenset[str]
    extended_key_usage: frozenset[str]
    key_size: int
    signature_hash: str
    validity: timedelta
    ca_certificates: tuple[x509.Certificate, ...]
    issued_at: datetime

    @classmethod
    def from_spec(
        cls, spec: ChallengeSpec, *, signature_hash: str, validity_days: int,
        ca_certificates: Sequence[x509.Certificate], issued_at: datetime,
    ) -> Expected:
        """The certificate a device enrolled with ``spec`` must receive from a profile signing with
        ``signature_hash`` for ``validity_days``, chaining to one of ``ca_certificates``."""
        return cls(
            subject=parse_name(spec.subject) if spec.subject else x509.Name([]),
            sans=frozenset(spec.sans),
            key_usage=frozenset(spec.key_usage),
            extended_key_usage=frozenset(spec.extended_key_usage),
            key_size=spec.key_size,
            signature_hash=signature_hash,
            validity=timedelta(days=validity_days),
            ca_certificates=tuple(ca_certificates),
            issued_at=issued_at,
        )


Check = Callable[[x509.Certificate, Expected], str | None]


def problems(certificate: x509.Certificate, expected: Expected) -> list[str]:
    """Every way ``certificate`` deviates from ``expected``; empty when it honours the profile."""
    found = (check(certificate, expected) for check in CHECKS)
    return [problem for problem in found if problem is not None]


def check_subject(certificate: x509.Certificate, expected: Expected) -> str | None:
    if certificate.subject == expected.subject:
        return None
    return f"subject {certificate.subject.rfc4514_string()!r}, expected {expected.subject.rfc4514_string()!r}"


def check_sans(certificate: x509.Certificate, expected: Expected) -> str | None:
    actual = frozenset(subject_alt_names(certificate))
    if actual == expected.sans:
        return None
    return f"SANs {_show(actual)}, expected {_show(expected.sans)}"


def check_key_usage(certificate: x509.Certificate, expected: Expected) -> str | None:
    extension = _extension(certificate, x509.KeyUsage)
    actual = frozenset() if extension is None else frozenset(u for u in KEY_USAGES if getattr(extension, u))
    if actual == expected.key_usage:
        return None
    return f"key usage {sorted(actual)}, expected {sorted(expected.key_usage)}"


def check_extended_key_usage(certificate: x509.Certificate, expected: Expected) -> str | None:
    extension = _extension(certificate, x509.ExtendedKeyUsage)
    actual = frozenset() if extension is None else frozenset(oid.dotted_string for oid in extension)
    if actual == expected.extended_key_usage:
        return None
    return f"EKU {sorted(actual)}, expected {sorted(expected.extended_key_usage)}"


def check_key_size(certificate: x509.Certificate, expected: Expected) -> str | None:
    key = certificate.public_key()
    size = key.key_size if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) else None
    if size == expected.key_size:
        return None
    return f"key size {size}, expected {expected.key_size}"


def check_signature_hash(certificate: x509.Certificate, expected: Expected) -> str | None:
    name = signature_hash_name(certificate)
    if name == expected.signature_hash:
        return None
    return f"signed with {name}, expected {expected.signature_hash}"


def check_validity(certificate: x509.Certificate, expected: Expected) -> str | None:
    """Lifetime within a day of the profile's (a server backdates notBefore by up to that), and it
    must be valid when it arrived."""
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    lifetime = not_after - not_before
    if abs(lifetime - expected.validity) > VALIDITY_TOLERANCE:
        return f"valid for {_days(lifetime)}, expected {_days(expected.validity)} (±1 day)"
    if abs(not_after - (expected.issued_at + expected.validity)) > VALIDITY_TOLERANCE:
        return f"expires {not_after:%Y-%m-%d %H:%M}, expected about {expected.issued_at + expected.validity:%Y-%m-%d}"
    if not not_before <= expected.issued_at <= not_after:
        return f"not valid when issued: {not_before:%Y-%m-%d %H:%M} to {not_after:%Y-%m-%d %H:%M}"
    return None


def check_end_entity(certificate: x509.Certificate, expected: Expected) -> str | None:
    constraints = _extension(certificate, x509.BasicConstraints)
    return "the certificate is a CA certificate" if constraints is not None and constraints.ca else None


def check_chain(certificate: x509.Certificate, expected: Expected) -> str | None:
    """Issued by one of the GetCACert certificates, and so on up to a self-signed one or the top of them."""
    current, seen = certificate, 0
    while seen < MAX_CHAIN:
        issuer = next((c for c in expected.ca_certificates if is_issued_by(current, c)), None)
        if issuer is None:
            if current is certificate:
                return f"not issued by any GetCACert certificate (issuer {certificate.issuer.rfc4514_string()!r})"
            return None  # the chain above this CA is not served (a server may leave the root out)
        if issuer.subject == issuer.issuer and is_issued_by(issuer, issuer):
            return None
        current, seen = issuer, seen + 1
    return "the GetCACert chain does not end"


CHECKS: tuple[Check, ...] = (
    check_subject, check_sans, check_key_usage, check_extended_key_usage, check_key_size,
    check_signature_hash, check_validity, check_end_entity, check_chain,
)


def subject_alt_names(certificate: x509.Certificate) -> Iterable[tuple[str, str]]:
    """The SANs as (type, value) pairs with the emulator's type names: email, upn, dns, uri (else kind:…)."""
    extension = _extension(certificate, x509.SubjectAlternativeName)
    return () if extension is None else (describe_name(name) for name in extension)


def describe_name(name: x509.GeneralName) -> tuple[str, str]:
    if isinstance(name, x509.RFC822Name):
        return "email", name.value
    if isinstance(name, x509.DNSName):
        return "dns", name.value
    if isinstance(name, x509.UniformResourceIdentifier):
        return "uri", name.value
    if isinstance(name, x509.OtherName) and name.type_id == UPN_OID:
        return "upn", _upn(name.value)
    return type(name).__name__, str(name.value)


def signature_hash_name(certificate: x509.Certificate) -> str:
    try:
        algorithm = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return certificate.signature_algorithm_oid.dotted_string
    return algorithm.name if algorithm is not None else "none"


def _upn(der: bytes) -> str:
    try:
        value = core.load(der).native
    except (ValueError, TypeError):
        return f"<undecodable {der.hex()}>"
    return value if isinstance(value, str) else f"<not a string: {value!r}>"


def _extension(certificate: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _show(sans: Iterable[tuple[str, str]]) -> str:
    return "[" + ", ".join(f"{kind}:{value}" for kind, value in sorted(sans)) + "]"


def _days(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 86400:.2f} days"
