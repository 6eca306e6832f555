"""Reading a CSR and checking it against an :class:`~scep_server.ca.policy.IssuancePolicy`.

What a CSR asks for travels in its extensionRequest (RFC 2985 §5.4.2): subjectAltNames, the SID in
either form, extendedKeyUsage, keyUsage. They are read here and handed to the policy's rules.
"""

from __future__ import annotations

from typing import TypeVar

from asn1crypto import core
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scep_server.ca.authority import CertificateAuthority
from scep_server.ca.policy import (
    CopyableName,
    Granted,
    IssuancePolicy,
    check_key,
    check_not_named_like_ca,
    check_san,
    check_san_count,
    check_sids,
    check_subject,
    eku_oid,
    granted_ekus,
    key_usage,
    sid_from_uri,
    sid_refused,
)
from scep_server.errors import BadAlg, BadMessageCheck, BadRequest
from scep_server.pki.csr import csr_signature_valid
from scep_server.pki.sans import UPN_OID
from scep_server.pki.usages import KEY_USAGE_NAMES

SID_EXTENSION_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.25.2")  # szOID_NTDS_CA_SECURITY_EXT
SID_OTHER_NAME_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.25.2.1")  # szOID_NTDS_OBJECTSID, inside it
_Ext = TypeVar("_Ext", bound=x509.ExtensionType)


def check_csr(
    csr: x509.CertificateSigningRequest, policy: IssuancePolicy, *, ca: CertificateAuthority | None = None
) -> None:
    """Refuse a CSR that is not signed by its key or that the policy does not allow.

    BadAlg: key or signature algorithm not supported; BadMessageCheck: the signature (the proof of
    possession, RFC 2986 §3) does not verify; BadRequest: key type, size or curve not allowed, or a
    name, SID or EKU the policy refuses (see :func:`check_request`; the CA's names only when ``ca`` is
    given, which :func:`~scep_server.ca.issue.build_certificate` checks in any case).
    """
    public_key = csr_public_key(csr)
    _check_signature_algorithm(csr)
    if not csr_signature_valid(csr):
        raise BadMessageCheck("the CSR signature does not verify with the CSR's public key")
    check_key(public_key, policy)
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
    check_subject(csr.subject, policy)
    sans = copyable_sans(csr, policy)
    if policy.only_sans is not None:  # narrowed by the challenge validator
        sans = [name for name in sans if name in policy.only_sans]
    if not csr.subject.rdns and not sans:
        raise BadRequest("the CSR has an empty subject and no subjectAltName: there is nothing to certify")
    sid_extension = _sid_extension(csr, policy)
    extended_key_usage = extended_key_usage_for(csr, policy)
    if ca is not None:
        check_not_named_like_ca(csr.subject, ca)
    return Granted(tuple(sans), extended_key_usage, sid_extension)


def csr_public_key(csr: x509.CertificateSigningRequest) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """The CSR's RSA or EC public key; BadAlg for any other."""
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


# --- the extensionRequest ------------------------------------------------------------------------


def requested(csr: x509.CertificateSigningRequest, kind: type[_Ext]) -> _Ext | None:
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


def extended_key_usage_for(
    csr: x509.CertificateSigningRequest, policy: IssuancePolicy
) -> x509.ExtendedKeyUsage | None:
    """extendedKeyUsage (RFC 5280 §4.2.1.12): forced by the profile, else as the CSR asks where allowed."""
    if policy.extended_key_usage is not None:
        oids = [eku_oid(eku) for eku in policy.extended_key_usage]
    else:
        oids = granted_ekus(list(requested(csr, x509.ExtendedKeyUsage) or ()), policy)
    return x509.ExtendedKeyUsage(list(dict.fromkeys(oids))) if oids else None


def key_usage_for(
    csr: x509.CertificateSigningRequest,
    policy: IssuancePolicy,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
) -> x509.KeyUsage | None:
    """keyUsage (RFC 5280 §4.2.1.3): forced by the profile, else the end-entity usages the CSR asks for."""
    asked = requested(csr, x509.KeyUsage) if policy.key_usage is None else None
    return key_usage(asked, public_key, policy)


# --- subjectAltNames -----------------------------------------------------------------------------


def copyable_sans(csr: x509.CertificateSigningRequest, policy: IssuancePolicy) -> list[CopyableName]:
    """The CSR's subjectAltNames, each of which the policy must allow (BadRequest otherwise).

    Allowed are at most ``max_sans`` DNS, email, UPN (otherName 1.3.6.1.4.1.311.20.2.3 holding a string),
    URI and IP names of the types in ``allowed_san_types``, each printable and at most ``max_san_length``
    characters; a SID URI only with ``allow_sid_extension``.
    """
    names = list(requested(csr, x509.SubjectAlternativeName) or ())
    check_san_count(len(names), policy)
    return [check_san(name, *_kind_and_text(name), policy) for name in names]


def _kind_and_text(name: x509.GeneralName) -> tuple[str, str]:
    kind, _, text = _describe(name).partition(":")
    return kind, text


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


def _upn_text(value: bytes) -> str:
    try:
        text = core.load(value).native
    except (ValueError, TypeError) as exc:
        raise BadRequest("a UPN subjectAltName does not hold a DER string") from exc
    if not isinstance(text, str):
        raise BadRequest("a UPN subjectAltName does not hold a string")
    return text


# --- SIDs ----------------------------------------------------------------------------------------


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
        raise BadRequest(sid_refused(f"the SID extension ({SID_EXTENSION_OID.dotted_string})"))
    check_sids(extract_sids(csr))
    return extension


# --- renewal -------------------------------------------------------------------------------------


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
    if policy.extended_key_usage is None and _eku_set(extended_key_usage_for(csr, policy)) != _eku_set(
        _extension(current, x509.ExtendedKeyUsage)
    ):
        raise BadRequest("a renewal must keep the extended key usages of the certificate it renews")
    if policy.key_usage is None and _usage_set(key_usage_for(csr, policy, csr_public_key(csr))) != _usage_set(
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
