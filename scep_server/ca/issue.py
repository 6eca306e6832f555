"""Issuing end-entity certificates from CSRs under a per-profile policy of allow-lists.

What a client asks for in its CSR is granted only where the profile's policy allows it, and a CSR that
asks for more is refused (BadRequest, naming the setting that would allow it) rather than trimmed: a
certificate never differs silently from what the device asked for, and an administrator learns which
setting a deployment needs. The policy covers:

- the subject: at most ``max_subject_length`` characters, printable (no control characters), and not
  named like the CA, a certificate above it or its RA;
- subjectAltNames: only DNS, email, UPN, URI and IP names of the profile's ``allowed_san_types``, at
  most ``max_sans`` of them, each printable and at most ``max_san_length`` characters;
- the SID, in either form (the extension 1.3.6.1.4.1.311.25.2 or a ``tag:microsoft.com,2022-09-14:sid:``
  URI subjectAltName): only when the profile sets ``allow_sid_extension``, since a client could otherwise
  claim any account's SID;
- extendedKeyUsage: forced by the profile, or from the CSR. Profiles that do not validate with Intune
  grant clientAuth and what ``allowed_extended_key_usages`` lists (clientAuth when the CSR asks none, as a
  certificate without EKU is good for every purpose); Intune profiles grant what Intune validated. On
  every profile the EKUs in :data:`RESTRICTED_EKUS` need to be listed;
- keyUsage: forced by the profile, else the end-entity usages the CSR asks for.

Every other requested extension, basicConstraints above all, is ignored.
"""

from __future__ import annotations

import ipaddress
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

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.keys.file import curve_name
from scep_server.ca.material import authority_key_identifier
from scep_server.ca.signing import check_hash_name, csr_signature_valid, sign_certificate
from scep_server.config import EKU_NAMES, KEY_USAGE_NAMES, SAN_TYPES, ProfileConfig
from scep_server.errors import BadAlg, BadMessageCheck, BadRequest, CAError
from scep_server.pki.names import describe_character, named_like, printable, unprintable_character

UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
SID_EXTENSION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.25.2")  # szOID_NTDS_CA_SECURITY_EXT
SID_OTHER_NAME_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.25.2.1")  # szOID_NTDS_OBJECTSID, inside it
SID_URI_PREFIX = "tag:microsoft.com,2022-09-14:sid:"
CERTIFICATE_REQUEST_AGENT = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.1")
PKINIT_CLIENT_AUTH = x509.ObjectIdentifier("1.3.6.1.5.2.3.4")
# EKUs no CSR obtains unless its profile lists them in allowed_extended_key_usages (or forces them): each
# makes the holder more than a device. anyExtendedKeyUsage is every purpose; a Certificate Request Agent
# enrolls on behalf of any user; Smartcard Logon and PKINIT sign in to Windows domains and Kerberos realms
# as the certificate's UPN or SID, and a KDC certificate impersonates the realm; id-kp-OCSPSigning from
# this CA makes a delegated OCSP responder for every certificate it issued (RFC 6960 §4.2.2.2).
RESTRICTED_EKUS: dict[x509.ObjectIdentifier, str] = {
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
    CERTIFICATE_REQUEST_AGENT: "Certificate Request Agent",
    ExtendedKeyUsageOID.SMARTCARD_LOGON: "Smartcard Logon",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSP Signing",
    PKINIT_CLIENT_AUTH: "PKINIT client authentication",
    ExtendedKeyUsageOID.KERBEROS_PKINIT_KDC: "PKINIT KDC",
}
BASELINE_EKUS = (ExtendedKeyUsageOID.CLIENT_AUTH,)  # what every profile grants when asked
CopyableName = x509.DNSName | x509.RFC822Name | x509.UniformResourceIdentifier | x509.IPAddress | x509.OtherName
_Ext = TypeVar("_Ext", bound=x509.ExtensionType)
_DOTTED_OID = re.compile(r"^\d+(\.\d+)+$")
_SID = re.compile(r"^S-1-\d+(-\d+)+$", re.IGNORECASE)
_EKU_LABELS = {x509.ObjectIdentifier(dotted): name for name, dotted in EKU_NAMES.items()}
_DEFAULT_KEY_USAGE = {"rsa": ("digital_signature", "key_encipherment"), "ec": ("digital_signature",)}
# RFC 5480 §3: keyEncipherment and dataEncipherment must not be asserted for EC keys.
_NOT_FOR_EC = frozenset({"key_encipherment", "data_encipherment"})


@dataclass(frozen=True, slots=True)
class IssuancePolicy:
    """What one profile lets a CSR obtain; see :meth:`from_profile` and the module's description.

    ``intune_validated``: the profile's challenge is Intune's, which compared the CSR with the Intune SCEP
    profile (its EKUs included) before anything is issued.
    """

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
    intune_validated: bool = False
    allowed_extended_key_usages: tuple[str, ...] = ()
    allowed_san_types: frozenset[str] = frozenset(SAN_TYPES)
    max_sans: int = 20
    max_subject_length: int = 512
    max_san_length: int = 256

    def __post_init__(self) -> None:
        check_hash_name(self.hash_name)
        for usage in self.key_usage or ():
            if usage not in KEY_USAGE_NAMES:
                raise ValueError(f"unknown key usage {usage!r}")
        for eku in (*(self.extended_key_usage or ()), *self.allowed_extended_key_usages):
            _eku_oid(eku)
        if self.validity <= timedelta(0) or self.backdate < timedelta(0):
            raise ValueError("validity must be positive and backdate not negative")
        if self.min_rsa_bits > self.max_rsa_bits:
            raise ValueError("min_rsa_bits exceeds max_rsa_bits")
        if not self.allowed_san_types <= frozenset(SAN_TYPES):
            raise ValueError(f"allowed_san_types takes {', '.join(SAN_TYPES)}")
        if self.max_sans < 0 or self.max_subject_length < 1 or self.max_san_length < 1:
            raise ValueError("max_sans must not be negative, max_subject_length and max_san_length positive")

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
            intune_validated=profile.challenge.type == "intune",
            allowed_extended_key_usages=profile.allowed_extended_key_usages,
            allowed_san_types=frozenset(profile.allowed_san_types),
            max_sans=profile.max_sans,
            max_subject_length=profile.max_subject_length,
            max_san_length=profile.max_san_length,
        )


def _eku_oid(eku: str) -> x509.ObjectIdentifier:
    if eku in EKU_NAMES:
        return x509.ObjectIdentifier(EKU_NAMES[eku])
    if _DOTTED_OID.match(eku):
        return x509.ObjectIdentifier(eku)
    raise ValueError(f"unknown extended key usage {eku!r} (a name or a dotted OID)")


@dataclass(frozen=True, slots=True)
class Granted:
    """What a CSR that passed the policy obtains beyond its subject and key."""

    sans: tuple[CopyableName, ...]
    extended_key_usage: x509.ExtendedKeyUsage | None
    sid_extension: x509.ExtensionType | None


# --- CSR checks ------------------------------------------------------------------------------------


def check_csr(
    csr: x509.CertificateSigningRequest, policy: IssuancePolicy, *, ca: CertificateAuthority | None = None
) -> None:
    """Refuse a CSR that is not signed by its key or that the policy does not allow.

    BadAlg: key or signature algorithm not supported; BadMessageCheck: the signature (the proof of
    possession, RFC 2986 §3) does not verify; BadRequest: key type, size or curve not allowed, or a
    name, SID or EKU the policy refuses (see :func:`check_request`; the CA's names only when ``ca`` is
    given, which :func:`build_certificate` checks in any case).
    """
    public_key = _csr_public_key(csr)
    _check_signature_algorithm(csr)
    if not csr_signature_valid(csr):
        raise BadMessageCheck("the CSR signature does not verify with the CSR's public key")
    _check_key_policy(public_key, policy)
    check_request(csr, policy, ca=ca)


def check_request(
    csr: x509.CertificateSigningRequest, policy: IssuancePolicy, *, ca: CertificateAuthority | None = None
) -> Granted:
    """What the policy grants the CSR's names, SID and EKUs; BadRequest for anything it does not allow.

    Refused: a subject or subjectAltName that is too long or holds a control character, more
    subjectAltNames than ``max_sans`` or of a type not allowed, a SID without ``allow_sid_extension``,
    an EKU the profile does not grant, nothing at all to certify, and (with ``ca``) a subject named
    like the CA, a certificate above it or its RA.
    """
    _check_subject(csr.subject, policy)
    sans = copyable_sans(csr, policy)
    if not csr.subject.rdns and not sans:
        raise BadRequest("the CSR has an empty subject and no subjectAltName: there is nothing to certify")
    sid_extension = _sid_extension(csr, policy)
    extended_key_usage = _extended_key_usage(csr, policy)
    if ca is not None:
        _check_not_named_like_ca(csr.subject, ca)
    return Granted(tuple(sans), extended_key_usage, sid_extension)


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

    The names, SID and EKUs are checked again (:func:`check_request`, with the CA's names), so nothing
    the policy refuses is signed even when :func:`check_csr` was not called.

    Validity runs from ``now - backdate`` (devices' clocks can be hours off) to ``now + validity``,
    never beyond the CA certificate nor ``not_after_cap`` (RFC 5280 §4.1.2.5).
    """
    granted = check_request(csr, policy, ca=ca)
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
    for extension, critical in _extensions(csr, ca, policy, public_key, granted):
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
    granted: Granted,
) -> Iterator[tuple[x509.ExtensionType, bool]]:
    """The extensions of the new certificate with their criticality (RFC 5280 §4.2)."""
    yield x509.BasicConstraints(ca=False, path_length=None), True
    key_usage = _key_usage(csr, policy, public_key)
    if key_usage is not None:
        yield key_usage, True
    if granted.extended_key_usage is not None:
        yield granted.extended_key_usage, False
    if granted.sans:
        # RFC 5280 §4.2.1.6: with an empty subject the subjectAltName must be critical.
        yield x509.SubjectAlternativeName(granted.sans), not csr.subject.rdns
    yield x509.SubjectKeyIdentifier.from_public_key(public_key), False
    yield authority_key_identifier(ca.ca_cert), False
    yield from _url_extensions(policy)
    if granted.sid_extension is not None:
        yield granted.sid_extension, False


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
    """extendedKeyUsage (RFC 5280 §4.2.1.12): forced by the profile, else as the CSR asks where allowed."""
    if policy.extended_key_usage is not None:
        oids = [_eku_oid(eku) for eku in policy.extended_key_usage]
    else:
        oids = _requested_ekus(csr, policy)
    return x509.ExtendedKeyUsage(list(dict.fromkeys(oids))) if oids else None


def _requested_ekus(csr: x509.CertificateSigningRequest, policy: IssuancePolicy) -> list[x509.ObjectIdentifier]:
    """The CSR's EKUs, each of which the policy must grant; none asked: clientAuth, except for Intune.

    Without extendedKeyUsage a certificate is good for every purpose (RFC 5280 §4.2.1.12), so a CSR
    that asks none gets the baseline; on an Intune profile, Intune already checked the absence.
    """
    requested = list(_requested(csr, x509.ExtendedKeyUsage) or ())
    if not requested:
        return [] if policy.intune_validated else list(BASELINE_EKUS)
    listed = {_eku_oid(eku) for eku in policy.allowed_extended_key_usages}
    for oid in requested:
        _check_eku(oid, policy, listed)
    return requested


def _check_eku(oid: x509.ObjectIdentifier, policy: IssuancePolicy, listed: set[x509.ObjectIdentifier]) -> None:
    if oid in listed:
        return
    label = f"{_eku_label(oid)} ({oid.dotted_string})"
    if oid in RESTRICTED_EKUS:
        raise BadRequest(
            f"the CSR asks for the extended key usage {label}, which is granted only to profiles that list it "
            "in allowed_extended_key_usages"
        )
    if not policy.intune_validated and oid not in BASELINE_EKUS:
        raise BadRequest(
            f"the CSR asks for the extended key usage {label}: this profile grants client_auth and what its "
            "allowed_extended_key_usages lists (or set extended_key_usage to force the EKUs)"
        )


def _eku_label(oid: x509.ObjectIdentifier) -> str:
    return RESTRICTED_EKUS.get(oid) or _EKU_LABELS.get(oid) or "an unnamed EKU"


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


# --- Names -----------------------------------------------------------------------------------------


def _check_subject(subject: x509.Name, policy: IssuancePolicy) -> None:
    """The subject is at most ``max_subject_length`` characters (RFC 4514) and every value printable."""
    length = len(subject.rfc4514_string())
    if length > policy.max_subject_length:
        raise BadRequest(
            f"the subject has {length} characters: this profile allows at most {policy.max_subject_length} "
            "(max_subject_length)"
        )
    for attribute in subject:
        if isinstance(attribute.value, str):
            _check_printable(attribute.value, f"the subject attribute {attribute.rfc4514_attribute_name}")


def _check_printable(text: str, what: str) -> None:
    char = unprintable_character(text)
    if char is not None:
        raise BadRequest(f"{what} contains the control character {describe_character(char)}: names must be printable")


def _check_not_named_like_ca(subject: x509.Name, ca: CertificateAuthority) -> None:
    """A leaf must not pass for the CA, a certificate above it (the root) or the RA, by subject or CN."""
    authorities = [ca.ca_cert.subject, *(cert.subject for cert in ca.chain), ca.ra_cert.subject]
    authority = named_like(subject, authorities)
    if authority is not None:
        raise BadRequest(
            f"the subject is named like the CA's own certificate {printable(authority.rfc4514_string())!r} "
            "(same name or commonName): a device certificate may not pass for the CA, its chain or its RA"
        )


def copyable_sans(csr: x509.CertificateSigningRequest, policy: IssuancePolicy) -> list[CopyableName]:
    """The CSR's subjectAltNames, each of which the policy must allow (BadRequest otherwise).

    Allowed are at most ``max_sans`` DNS, email, UPN (otherName 1.3.6.1.4.1.311.20.2.3 holding a string),
    URI and IP names of the types in ``allowed_san_types``, each printable and at most ``max_san_length``
    characters; a SID URI only with ``allow_sid_extension``.
    """
    requested = list(_requested(csr, x509.SubjectAlternativeName) or ())
    if len(requested) > policy.max_sans:
        raise BadRequest(
            f"the CSR asks for {len(requested)} subjectAltNames: this profile allows at most {policy.max_sans} "
            "(max_sans)"
        )
    return [_check_san(name, policy) for name in requested]


def _check_san(name: x509.GeneralName, policy: IssuancePolicy) -> CopyableName:
    kind, _, text = _describe(name).partition(":")
    if kind not in SAN_TYPES or not isinstance(name, CopyableName):
        detail = f" {name.type_id.dotted_string}" if isinstance(name, x509.OtherName) else ""
        raise BadRequest(
            f"a subjectAltName of type {kind}{detail} is not supported: certificates carry {', '.join(SAN_TYPES)} names"
        )
    if kind == "uri" and sid_from_uri(text) is not None:
        if not policy.allow_sid_extension:
            raise BadRequest(_sid_refused(f"a {SID_URI_PREFIX} URI subjectAltName"))
    elif kind not in policy.allowed_san_types:
        allowed = ", ".join(sorted(policy.allowed_san_types)) or "none"
        raise BadRequest(f"{kind} subjectAltNames are not allowed by this profile (allowed_san_types: {allowed})")
    if len(text) > policy.max_san_length:
        raise BadRequest(
            f"a {kind} subjectAltName has {len(text)} characters: this profile allows at most "
            f"{policy.max_san_length} (max_san_length)"
        )
    _check_printable(text, f"a {kind} subjectAltName")
    if isinstance(name, x509.IPAddress) and not isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise BadRequest("an IP subjectAltName must be one address, not a network")
    return name


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


# --- SIDs ------------------------------------------------------------------------------------------


class _SidOtherName(core.Sequence):  # type: ignore[misc]
    _fields = [("type_id", core.ObjectIdentifier), ("value", core.Any, {"explicit": 0})]


class _SidGeneralName(core.Choice):  # type: ignore[misc]
    _alternatives = [("other_name", _SidOtherName, {"implicit": 0})]


class _SidGeneralNames(core.SequenceOf):  # type: ignore[misc]
    """The SID extension's value: GeneralNames holding one otherName szOID_NTDS_OBJECTSID."""

    _child_spec = _SidGeneralName


def sid_extension_value(sid: str) -> x509.UnrecognizedExtension:
    """The SID extension (1.3.6.1.4.1.311.25.2) naming ``sid``, as Windows CAs write it."""
    names = x509.SubjectAlternativeName([x509.OtherName(SID_OTHER_NAME_OID, core.OctetString(sid.encode()).dump())])
    return x509.UnrecognizedExtension(SID_EXTENSION_OID, names.public_bytes())  # GeneralNames, as the SAN


def sid_from_uri(uri: str) -> str | None:
    """The SID in a ``tag:microsoft.com,2022-09-14:sid:<SID>`` URI (prefix compared case-insensitively)."""
    if uri[: len(SID_URI_PREFIX)].lower() == SID_URI_PREFIX:
        return uri[len(SID_URI_PREFIX) :]
    return None


def extract_sids(obj: x509.Certificate | x509.CertificateSigningRequest) -> tuple[str, ...]:
    """Every SID a CSR or certificate names, in the SID extension and as SID URI subjectAltNames.

    Windows maps a certificate to an account by either form (KB5014754), so both are one claim. In
    order, without repeats; BadRequest when the extension cannot be read.
    """
    extensions = _csr_extensions(obj) if isinstance(obj, x509.CertificateSigningRequest) else obj.extensions
    sids: list[str] = []
    try:
        sids += _sids_in_extension(extensions.get_extension_for_oid(SID_EXTENSION_OID).value)
    except x509.ExtensionNotFound:
        pass
    try:
        uris = extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        uris = []
    sids += [sid for uri in uris if (sid := sid_from_uri(uri)) is not None]
    return tuple(dict.fromkeys(sids))


def _sids_in_extension(value: x509.ExtensionType) -> list[str]:
    malformed = BadRequest("the SID extension (1.3.6.1.4.1.311.25.2) is malformed")
    if not isinstance(value, x509.UnrecognizedExtension):
        raise malformed
    try:
        names = _SidGeneralNames.load(value.value, strict=True)
        return [_sid_text(name) for name in names]
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise malformed from exc


def _sid_text(name: _SidGeneralName) -> str:
    other = name.chosen
    inner = other["value"].parsed
    if other["type_id"].dotted != SID_OTHER_NAME_OID.dotted_string or not isinstance(inner, core.OctetString):
        raise ValueError("not an szOID_NTDS_OBJECTSID otherName")
    return bytes(inner.native).decode("ascii")


def _sid_extension(csr: x509.CertificateSigningRequest, policy: IssuancePolicy) -> x509.ExtensionType | None:
    """The SID extension to copy, when the CSR has one; every SID it names (both forms) is checked."""
    extension = _requested_oid(csr, SID_EXTENSION_OID)
    if extension is not None and not policy.allow_sid_extension:
        raise BadRequest(_sid_refused(f"the SID extension ({SID_EXTENSION_OID.dotted_string})"))
    sids = extract_sids(csr)
    if any(not _SID.match(sid) for sid in sids):
        raise BadRequest("the CSR names a SID that is not a Windows SID (S-1-...)")
    if len({sid.upper() for sid in sids}) > 1:
        raise BadRequest("the CSR names more than one SID: a certificate maps to one account")
    return extension


def _sid_refused(form: str) -> str:
    return (
        f"the CSR names a SID in {form}: this profile does not certify SIDs (allow_sid_extension), "
        "as a SID maps the certificate to a Windows account"
    )


# --- Renewal --------------------------------------------------------------------------------------


def check_renewal_identity(
    csr: x509.CertificateSigningRequest, current: x509.Certificate, policy: IssuancePolicy
) -> None:
    """Refuse a renewal CSR that would not keep the identity of ``current``, the certificate it renews.

    A RenewalReq proves possession of ``current``, not the right to anything else: the subject, the
    subjectAltNames, the SIDs (both forms), the EKUs unless the profile forces them and the keyUsage
    unless the profile forces it must stay. EKUs and keyUsage are compared as the renewal would be
    issued under ``policy``, so a CSR that asks none still matches the defaults ``current`` was given.
    Anything else needs a fresh, validated enrollment. BadRequest names what would change.
    """
    if csr.subject != current.subject:
        raise BadRequest("a renewal must keep the subject of the certificate it renews")
    if set(describe_sans(csr)) != set(describe_sans(current)):
        raise BadRequest("a renewal must keep the subjectAltNames of the certificate it renews")
    if {sid.upper() for sid in extract_sids(csr)} != {sid.upper() for sid in extract_sids(current)}:
        raise BadRequest("a renewal must keep the SID of the certificate it renews")
    if policy.extended_key_usage is None and _eku_set(_extended_key_usage(csr, policy)) != _eku_set(
        _extension(current, x509.ExtendedKeyUsage)
    ):
        raise BadRequest("a renewal must keep the extended key usages of the certificate it renews")
    if policy.key_usage is None and _usage_set(_key_usage(csr, policy, _csr_public_key(csr))) != _usage_set(
        _extension(current, x509.KeyUsage)
    ):
        raise BadRequest("a renewal must keep the key usage of the certificate it renews")


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _eku_set(usages: x509.ExtendedKeyUsage | None) -> frozenset[str]:
    return frozenset(oid.dotted_string for oid in usages or ())


def _usage_set(usage: x509.KeyUsage | None) -> frozenset[str]:
    if usage is None:
        return frozenset()
    return frozenset(name for name in (*KEY_USAGE_NAMES, "key_cert_sign", "crl_sign") if getattr(usage, name))


# --- Thumbprints ----------------------------------------------------------------------------------


def thumbprints(cert: x509.Certificate) -> tuple[str, str]:
    """The (SHA-1, SHA-256) thumbprints of the certificate's DER, upper-case hex without separators."""
    return cert.fingerprint(hashes.SHA1()).hex().upper(), cert.fingerprint(hashes.SHA256()).hex().upper()
