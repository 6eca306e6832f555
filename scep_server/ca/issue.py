"""Issuing end-entity certificates from CSRs under a per-profile policy.

What a client asks for in its CSR is taken only where the policy allows: the subject as-is, the
subjectAltNames of known types, keyUsage and extendedKeyUsage when the profile does not force them,
and the Microsoft SID extension only when the profile explicitly allows it (a client could otherwise
claim any account's SID). Every other requested extension, basicConstraints above all, is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from asn1crypto import core
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from ..config import EKU_NAMES, KEY_USAGE_NAMES, ProfileConfig
from ..errors import BadAlg, BadMessageCheck, BadRequest, CAError
from .authority import CertificateAuthority
from .keys import curve_name
from .material import authority_key_identifier
from .signing import check_hash_name, csr_signature_valid, sign_certificate

UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
SID_EXTENSION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.25.2")
CopyableName = x509.DNSName | x509.RFC822Name | x509.UniformResourceIdentifier | x509.IPAddress | x509.OtherName
_Ext = TypeVar("_Ext", bound=x509.ExtensionType)
_DOTTED_OID = re.compile(r"^\d+(\.\d+)+$")
# A certificate with id-kp-OCSPSigning issued by the CA is a delegated OCSP responder for the whole CA
# (RFC 6960 §4.2.2.2): never grant it just because a CSR asks.
_EKUS_NEVER_FROM_CSR = frozenset({ExtendedKeyUsageOID.OCSP_SIGNING})
_DEFAULT_KEY_USAGE = {"rsa": ("digital_signature", "key_encipherment"), "ec": ("digital_signature",)}
# RFC 5480 §3: keyEncipherment and dataEncipherment must not be asserted for EC keys.
_NOT_FOR_EC = frozenset({"key_encipherment", "data_encipherment"})


@dataclass(frozen=True, slots=True)
class IssuancePolicy:
    """What one profile lets a CSR obtain; see :meth:`from_profile`."""

    validity: timedelta
    backdate: timedelta
    hash_name: str
    allowed_key_types: frozenset[str]
    min_rsa_bits: int
    max_rsa_bits: int
    allowed_curves: frozenset[str]
    key_usage: tuple[str, ...] | None
    extended_key_usage: tuple[str, ...] | None
    allow_sid_extension: bool
    crl_url: str | None
    ca_issuers_url: str | None
    ocsp_url: str | None = None

    def __post_init__(self) -> None:
        check_hash_name(self.hash_name)
        for usage in self.key_usage or ():
            if usage not in KEY_USAGE_NAMES:
                raise ValueError(f"unknown key usage {usage!r}")
        for eku in self.extended_key_usage or ():
            _eku_oid(eku)
        if self.validity <= timedelta(0) or self.backdate < timedelta(0):
            raise ValueError("validity must be positive and backdate not negative")
        if self.min_rsa_bits > self.max_rsa_bits:
            raise ValueError("min_rsa_bits exceeds max_rsa_bits")

    @classmethod
    def from_profile(
        cls, profile: ProfileConfig, *, crl_url: str | None, ca_issuers_url: str | None, ocsp_url: str | None = None
    ) -> IssuancePolicy:
        """The policy of a configured profile; the URLs go into CDP and AIA when given."""
        return cls(
            validity=timedelta(days=profile.validity_days),
            backdate=timedelta(minutes=profile.backdate_minutes),
            hash_name=profile.hash,
            allowed_key_types=frozenset(profile.allowed_key_types),
            min_rsa_bits=profile.min_rsa_bits,
            max_rsa_bits=profile.max_rsa_bits,
            allowed_curves=frozenset(profile.allowed_curves),
            key_usage=profile.key_usage,
            extended_key_usage=profile.extended_key_usage,
            allow_sid_extension=profile.allow_sid_extension,
            crl_url=crl_url,
            ca_issuers_url=ca_issuers_url,
            ocsp_url=ocsp_url,
        )


def _eku_oid(eku: str) -> x509.ObjectIdentifier:
    if eku in EKU_NAMES:
        return x509.ObjectIdentifier(EKU_NAMES[eku])
    if _DOTTED_OID.match(eku):
        return x509.ObjectIdentifier(eku)
    raise ValueError(f"unknown extended key usage {eku!r} (a name or a dotted OID)")


# --- CSR checks ------------------------------------------------------------------------------------


def check_csr(csr: x509.CertificateSigningRequest, policy: IssuancePolicy) -> None:
    """Refuse a CSR that is not signed by its key or that the policy does not allow.

    BadAlg: key or signature algorithm not supported; BadMessageCheck: the signature (the proof of
    possession, RFC 2986 §3) does not verify; BadRequest: key type, size or curve not allowed, or no
    name at all to certify.
    """
    public_key = _csr_public_key(csr)
    _check_signature_algorithm(csr)
    if not csr_signature_valid(csr):
        raise BadMessageCheck("the CSR signature does not verify with the CSR's public key")
    _check_key_policy(public_key, policy)
    sans = copyable_sans(csr)
    if not csr.subject.rdns and not sans:
        raise BadRequest("the CSR has an empty subject and no subjectAltName: there is nothing to certify")


def _csr_public_key(csr: x509.CertificateSigningRequest) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BadAlg("the CSR's public key algorithm is not supported: use RSA or EC") from exc
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        kind = type(public_key).__name__.removesuffix("PublicKey").lstrip("_")
        raise BadAlg(f"{kind} keys are not supported: use RSA or EC")
    return public_key


def _check_signature_algorithm(csr: x509.CertificateSigningRequest) -> None:
    try:
        algorithm = csr.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        oid = csr.signature_algorithm_oid.dotted_string
        raise BadAlg(f"the CSR signature algorithm {oid} is not supported") from exc
    if isinstance(algorithm, hashes.MD5):
        raise BadAlg("MD5-signed CSRs are not accepted: sign the CSR with SHA-256 (or SHA-1)")


def _check_key_policy(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, policy: IssuancePolicy) -> None:
    kind = "rsa" if isinstance(public_key, rsa.RSAPublicKey) else "ec"
    if kind not in policy.allowed_key_types:
        allowed = ", ".join(sorted(policy.allowed_key_types)) or "none"
        raise BadRequest(f"{kind.upper()} keys are not allowed by this profile (allowed: {allowed})")
    if isinstance(public_key, rsa.RSAPublicKey):
        _check_rsa_size(public_key.key_size, policy)
    elif curve_name(public_key.curve) not in policy.allowed_curves:
        allowed = ", ".join(sorted(policy.allowed_curves)) or "none"
        raise BadRequest(f"curve {curve_name(public_key.curve)} is not allowed by this profile (allowed: {allowed})")


def _check_rsa_size(bits: int, policy: IssuancePolicy) -> None:
    if bits < policy.min_rsa_bits:
        raise BadRequest(f"the RSA key has {bits} bits: this profile needs at least {policy.min_rsa_bits}")
    if bits > policy.max_rsa_bits:
        raise BadRequest(f"the RSA key has {bits} bits: this profile allows at most {policy.max_rsa_bits}")


# --- Building --------------------------------------------------------------------------------------


def build_certificate(
    csr: x509.CertificateSigningRequest,
    ca: CertificateAuthority,
    policy: IssuancePolicy,
    *,
    now: datetime | None = None,
    not_after_cap: datetime | None = None,
) -> x509.Certificate:
    """Issue the certificate for a CSR that :func:`check_csr` accepted.

    Validity runs from ``now - backdate`` (devices' clocks can be hours off) to ``now + validity``,
    never beyond the CA certificate nor ``not_after_cap`` (RFC 5280 §4.1.2.5).
    """
    now = now if now is not None else datetime.now(UTC)
    not_before, not_after = _validity(ca.ca_cert, policy, now, not_after_cap)
    public_key = _csr_public_key(csr)
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in _extensions(csr, ca, policy, public_key):
        builder = builder.add_extension(extension, critical=critical)
    return sign_certificate(builder, ca.ca_key, policy.hash_name)


def _validity(
    ca_cert: x509.Certificate, policy: IssuancePolicy, now: datetime, cap: datetime | None
) -> tuple[datetime, datetime]:
    if ca_cert.not_valid_after_utc <= now:
        raise CAError(f"the CA certificate expired on {ca_cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    not_before = max(now - policy.backdate, ca_cert.not_valid_before_utc)
    not_after = min(now + policy.validity, ca_cert.not_valid_after_utc)
    if cap is not None:
        not_after = min(not_after, cap)
    if not_after <= not_before:
        raise BadRequest("the certificate would expire before it becomes valid")
    return not_before, not_after


def _extensions(
    csr: x509.CertificateSigningRequest,
    ca: CertificateAuthority,
    policy: IssuancePolicy,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
) -> Iterator[tuple[x509.ExtensionType, bool]]:
    """The extensions of the new certificate with their criticality (RFC 5280 §4.2)."""
    yield x509.BasicConstraints(ca=False, path_length=None), True
    key_usage = _key_usage(csr, policy, public_key)
    if key_usage is not None:
        yield key_usage, True
    eku = _extended_key_usage(csr, policy)
    if eku is not None:
        yield eku, False
    sans = copyable_sans(csr)
    if sans:
        # RFC 5280 §4.2.1.6: with an empty subject the subjectAltName must be critical.
        yield x509.SubjectAlternativeName(sans), not csr.subject.rdns
    yield x509.SubjectKeyIdentifier.from_public_key(public_key), False
    yield authority_key_identifier(ca.ca_cert), False
    yield from _url_extensions(policy)
    sid = _requested_oid(csr, SID_EXTENSION_OID)
    if sid is not None and policy.allow_sid_extension:
        yield sid, False


def _url_extensions(policy: IssuancePolicy) -> Iterator[tuple[x509.ExtensionType, bool]]:
    """CRL distribution point (RFC 5280 §4.2.1.13) and AIA ocsp and caIssuers (§4.2.2.1)."""
    if policy.crl_url:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(policy.crl_url)], None, None, None)
        yield x509.CRLDistributionPoints([point]), False
    access = [
        x509.AccessDescription(method, x509.UniformResourceIdentifier(url))
        for method, url in (
            (AuthorityInformationAccessOID.OCSP, policy.ocsp_url),
            (AuthorityInformationAccessOID.CA_ISSUERS, policy.ca_issuers_url),
        )
        if url
    ]
    if access:
        yield x509.AuthorityInformationAccess(access), False


def _key_usage(
    csr: x509.CertificateSigningRequest,
    policy: IssuancePolicy,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
) -> x509.KeyUsage | None:
    """keyUsage (RFC 5280 §4.2.1.3): forced by the profile, else the end-entity usages the CSR asks for."""
    kind = "rsa" if isinstance(public_key, rsa.RSAPublicKey) else "ec"
    if policy.key_usage is not None:
        usages = set(policy.key_usage)
    else:
        requested = _requested(csr, x509.KeyUsage)
        usages = {name for name in KEY_USAGE_NAMES if requested and getattr(requested, name)}
    if kind == "ec":
        usages -= _NOT_FOR_EC
    if not usages and policy.key_usage is None:
        usages = set(_DEFAULT_KEY_USAGE[kind])
    if not usages:
        return None
    flags = {name: name in usages for name in KEY_USAGE_NAMES}
    return x509.KeyUsage(**flags, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)


def _extended_key_usage(csr: x509.CertificateSigningRequest, policy: IssuancePolicy) -> x509.ExtendedKeyUsage | None:
    """extendedKeyUsage (RFC 5280 §4.2.1.12): forced by the profile, else as the CSR asks."""
    if policy.extended_key_usage is not None:
        oids = [_eku_oid(eku) for eku in policy.extended_key_usage]
    else:
        requested = _requested(csr, x509.ExtendedKeyUsage)
        oids = [oid for oid in requested or () if oid not in _EKUS_NEVER_FROM_CSR]
    return x509.ExtendedKeyUsage(list(dict.fromkeys(oids))) if oids else None


def _requested(csr: x509.CertificateSigningRequest, kind: type[_Ext]) -> _Ext | None:
    """The value of the extension ``kind`` in the CSR's extensionRequest (RFC 2985 §5.4.2), or None."""
    try:
        return _csr_extensions(csr).get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _requested_oid(csr: x509.CertificateSigningRequest, oid: x509.ObjectIdentifier) -> x509.ExtensionType | None:
    try:
        return _csr_extensions(csr).get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def _csr_extensions(csr: x509.CertificateSigningRequest) -> x509.Extensions:
    try:
        return csr.extensions
    except ValueError as exc:
        raise BadRequest(f"the CSR's extensionRequest is malformed: {exc}") from exc


# --- Names and thumbprints -------------------------------------------------------------------------


def copyable_sans(csr: x509.CertificateSigningRequest) -> list[CopyableName]:
    """The subjectAltNames of a CSR that are copied into certificates: DNS, email, URI, IP and UPN.

    A UPN (otherName 1.3.6.1.4.1.311.20.2.3) must hold a string, else the CSR is a BadRequest.
    """
    requested = _requested(csr, x509.SubjectAlternativeName)
    names: list[CopyableName] = []
    for name in requested or ():
        if isinstance(name, x509.OtherName):
            if name.type_id == UPN_OID:
                _upn_text(name.value)
                names.append(name)
        elif isinstance(name, CopyableName):
            names.append(name)
    return names


def _upn_text(value: bytes) -> str:
    try:
        text = core.load(value).native
    except (ValueError, TypeError) as exc:
        raise BadRequest("a UPN subjectAltName does not hold a DER string") from exc
    if not isinstance(text, str):
        raise BadRequest("a UPN subjectAltName does not hold a string")
    return text


def describe_sans(obj: x509.Certificate | x509.CertificateSigningRequest) -> tuple[str, ...]:
    """The subjectAltNames as ``dns:``, ``email:``, ``upn:``, ``uri:``, ``ip:`` (others by kind) strings."""
    try:
        names = obj.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    except ValueError as exc:
        raise BadRequest(f"the subjectAltName extension is malformed: {exc}") from exc
    return tuple(_describe(name) for name in names)


def _describe(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"dns:{name.value}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"uri:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"ip:{name.value}"
    if isinstance(name, x509.OtherName):
        return f"upn:{_upn_text(name.value)}" if name.type_id == UPN_OID else f"othername:{name.type_id.dotted_string}"
    if isinstance(name, x509.DirectoryName):
        return f"dirname:{name.value.rfc4514_string()}"
    if isinstance(name, x509.RegisteredID):
        return f"rid:{name.value.dotted_string}"
    return f"other:{type(name).__name__}"


def thumbprints(cert: x509.Certificate) -> tuple[str, str]:
    """The (SHA-1, SHA-256) thumbprints of the certificate's DER, upper-case hex without separators."""
    return cert.fingerprint(hashes.SHA1()).hex().upper(), cert.fingerprint(hashes.SHA256()).hex().upper()
