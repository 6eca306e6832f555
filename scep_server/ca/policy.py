"""What a profile lets a CSR obtain: a policy of allow-lists, and the rules that apply it.

What a client asks for in its CSR is granted only where the profile's policy allows it, and a CSR that
asks for more is refused (BadRequest, naming the setting that would allow it) rather than trimmed: a
certificate never differs silently from what the device asked for, and an administrator learns which
setting a deployment needs. Only the profile's challenge validator may grant less than was asked
(fewer subjectAltNames, a shorter validity: :meth:`IssuancePolicy.narrowed`), having said so. The
policy covers:

- the key: its type, RSA size or EC curve;
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

Every other requested extension, basicConstraints above all, is ignored. The rules here take what was
read from the CSR (:mod:`scep_server.ca.csr` reads it).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.keys.generate import curve_name
from scep_server.ca.signing import check_hash_name
from scep_server.config import ProfileConfig
from scep_server.errors import BadRequest
from scep_server.pki.names import describe_character, named_like, printable, unprintable_character
from scep_server.pki.sans import SAN_TYPES, SID_URI_PREFIX
from scep_server.pki.usages import CERTIFICATE_REQUEST_AGENT, EKU_NAMES, KEY_USAGE_NAMES, PKINIT_CLIENT_AUTH

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
    # What a challenge validator narrowed the request to (see ``narrowed``): only these of the CSR's
    # subjectAltNames are certified; None: every one the policy allows.
    only_sans: frozenset[x509.GeneralName] | None = None

    def __post_init__(self) -> None:
        check_hash_name(self.hash_name)
        for usage in self.key_usage or ():
            if usage not in KEY_USAGE_NAMES:
                raise ValueError(f"unknown key usage {usage!r}")
        for eku in (*(self.extended_key_usage or ()), *self.allowed_extended_key_usages):
            eku_oid(eku)
        if self.validity <= timedelta(0) or self.backdate < timedelta(0):
            raise ValueError("validity must be positive and backdate not negative")
        if self.min_rsa_bits > self.max_rsa_bits:
            raise ValueError("min_rsa_bits exceeds max_rsa_bits")
        if not self.allowed_san_types <= frozenset(SAN_TYPES):
            raise ValueError(f"allowed_san_types takes {', '.join(SAN_TYPES)}")
        if self.max_sans < 0 or self.max_subject_length < 1 or self.max_san_length < 1:
            raise ValueError("max_sans must not be negative, max_subject_length and max_san_length positive")

    def for_generation(self, label: str) -> IssuancePolicy:
        """This policy for certificates of the CA generation ``label``: its own CDP and caIssuers URLs
        (``.../crl/<label>.crl``, ``.../ca/<label>.crt``), the OCSP URL shared."""
        return replace(
            self, crl_url=_relabelled(self.crl_url, label, ".crl"),
            ca_issuers_url=_relabelled(self.ca_issuers_url, label, ".crt"),
        )

    def narrowed(self, *, sans: Iterable[x509.GeneralName] | None, validity_days: int | None) -> IssuancePolicy:
        """This policy granting less: only ``sans`` of the CSR's subjectAltNames (None: as before), a
        validity of ``validity_days`` (None: as before). BadRequest for a validity beyond this policy's:
        a validator may narrow what the profile grants, never widen it."""
        validity = self.validity
        if validity_days is not None:
            validity = timedelta(days=validity_days)
            if not timedelta(0) < validity <= self.validity:
                raise BadRequest(
                    f"the challenge validator granted a validity of {validity_days} days: this profile issues "
                    f"for at most {self.validity.days} (validity_days), and a validator may only shorten it"
                )
        only_sans = self.only_sans if sans is None else frozenset(sans)
        return replace(self, validity=validity, only_sans=only_sans)

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


@dataclass(frozen=True, slots=True)
class Granted:
    """What a CSR that passed the policy obtains beyond its subject and key."""

    sans: tuple[CopyableName, ...]
    extended_key_usage: x509.ExtendedKeyUsage | None
    sid_extension: x509.ExtensionType | None


def eku_oid(eku: str) -> x509.ObjectIdentifier:
    """The OID of an EKU given by configuration name or as a dotted OID; ValueError otherwise."""
    if eku in EKU_NAMES:
        return x509.ObjectIdentifier(EKU_NAMES[eku])
    if _DOTTED_OID.match(eku):
        return x509.ObjectIdentifier(eku)
    raise ValueError(f"unknown extended key usage {eku!r} (a name or a dotted OID)")


# --- the key -------------------------------------------------------------------------------------


def check_key(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, policy: IssuancePolicy) -> None:
    """BadRequest unless the key's type, RSA size or EC curve is allowed."""
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


def key_usage(
    requested: x509.KeyUsage | None, public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, policy: IssuancePolicy
) -> x509.KeyUsage | None:
    """keyUsage (RFC 5280 §4.2.1.3): forced by the profile, else the end-entity usages ``requested``."""
    kind = "rsa" if isinstance(public_key, rsa.RSAPublicKey) else "ec"
    if policy.key_usage is not None:
        usages = set(policy.key_usage)
    else:
        usages = {name for name in KEY_USAGE_NAMES if requested and getattr(requested, name)}
    if kind == "ec":
        usages -= _NOT_FOR_EC
    if not usages and policy.key_usage is None:
        usages = set(_DEFAULT_KEY_USAGE[kind])
    if not usages:
        return None
    flags = {name: name in usages for name in KEY_USAGE_NAMES}
    return x509.KeyUsage(**flags, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False)


# --- names ---------------------------------------------------------------------------------------


def check_subject(subject: x509.Name, policy: IssuancePolicy) -> None:
    """The subject is at most ``max_subject_length`` characters (RFC 4514) and every value printable."""
    length = len(subject.rfc4514_string())
    if length > policy.max_subject_length:
        raise BadRequest(
            f"the subject has {length} characters: this profile allows at most {policy.max_subject_length} "
            "(max_subject_length)"
        )
    for attribute in subject:
        if isinstance(attribute.value, str):
            check_printable(attribute.value, f"the subject attribute {attribute.rfc4514_attribute_name}")


def check_printable(text: str, what: str) -> None:
    char = unprintable_character(text)
    if char is not None:
        raise BadRequest(f"{what} contains the control character {describe_character(char)}: names must be printable")


def check_not_named_like_ca(subject: x509.Name, ca: CertificateAuthority) -> None:
    """A leaf must not pass for the CA, a certificate above it (the root) or the RA, by subject or CN."""
    authorities = [ca.ca_cert.subject, *(cert.subject for cert in ca.chain), ca.ra_cert.subject]
    authority = named_like(subject, authorities)
    if authority is not None:
        raise BadRequest(
            f"the subject is named like the CA's own certificate {printable(authority.rfc4514_string())!r} "
            "(same name or commonName): a device certificate may not pass for the CA, its chain or its RA"
        )


def check_san_count(count: int, policy: IssuancePolicy) -> None:
    if count > policy.max_sans:
        raise BadRequest(
            f"the CSR asks for {count} subjectAltNames: this profile allows at most {policy.max_sans} (max_sans)"
        )


def check_san(name: x509.GeneralName, kind: str, text: str, policy: IssuancePolicy) -> CopyableName:
    """One subjectAltName, described as ``kind`` and ``text`` (``dns``, ``example.com``), if allowed."""
    if kind not in SAN_TYPES or not isinstance(name, CopyableName):
        detail = f" {name.type_id.dotted_string}" if isinstance(name, x509.OtherName) else ""
        raise BadRequest(
            f"a subjectAltName of type {kind}{detail} is not supported: certificates carry {', '.join(SAN_TYPES)} names"
        )
    if kind == "uri" and sid_from_uri(text) is not None:
        if not policy.allow_sid_extension:
            raise BadRequest(sid_refused(f"a {SID_URI_PREFIX} URI subjectAltName"))
    elif kind not in policy.allowed_san_types:
        allowed = ", ".join(sorted(policy.allowed_san_types)) or "none"
        raise BadRequest(f"{kind} subjectAltNames are not allowed by this profile (allowed_san_types: {allowed})")
    if len(text) > policy.max_san_length:
        raise BadRequest(
            f"a {kind} subjectAltName has {len(text)} characters: this profile allows at most "
            f"{policy.max_san_length} (max_san_length)"
        )
    check_printable(text, f"a {kind} subjectAltName")
    if isinstance(name, x509.IPAddress) and not isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise BadRequest("an IP subjectAltName must be one address, not a network")
    return name


# --- SIDs ----------------------------------------------------------------------------------------


def sid_from_uri(uri: str) -> str | None:
    """The SID in a ``tag:microsoft.com,2022-09-14:sid:<SID>`` URI (prefix compared case-insensitively)."""
    if uri[: len(SID_URI_PREFIX)].lower() == SID_URI_PREFIX:
        return uri[len(SID_URI_PREFIX) :]
    return None


def check_sids(sids: tuple[str, ...]) -> None:
    """Every SID a CSR names is a Windows SID, and they are all one (compared case-insensitively)."""
    if any(not _SID.match(sid) for sid in sids):
        raise BadRequest("the CSR names a SID that is not a Windows SID (S-1-...)")
    if len({sid.upper() for sid in sids}) > 1:
        raise BadRequest("the CSR names more than one SID: a certificate maps to one account")


def sid_refused(form: str) -> str:
    return (
        f"the CSR names a SID in {form}: this profile does not certify SIDs (allow_sid_extension), "
        "as a SID maps the certificate to a Windows account"
    )


# --- extended key usages -------------------------------------------------------------------------


def granted_ekus(requested: list[x509.ObjectIdentifier], policy: IssuancePolicy) -> list[x509.ObjectIdentifier]:
    """The CSR's EKUs, each of which the policy must grant; none asked: clientAuth, except for Intune.

    Without extendedKeyUsage a certificate is good for every purpose (RFC 5280 §4.2.1.12), so a CSR
    that asks none gets the baseline; on an Intune profile, Intune already checked the absence.
    """
    if not requested:
        return [] if policy.intune_validated else list(BASELINE_EKUS)
    listed = {eku_oid(eku) for eku in policy.allowed_extended_key_usages}
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


def _relabelled(url: str | None, label: str, suffix: str) -> str | None:
    """``url`` (``<base>/<name><suffix>``) naming ``label`` instead."""
    if url is None or not url.endswith(suffix):
        return url
    return f"{url.rsplit('/', 1)[0]}/{label}{suffix}"
