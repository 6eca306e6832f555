"""Reading the device's CSR and comparing it with what the profile asked for (intune-api.md §5, §7).

Comparisons are exact sets: a CSR that asks for more (an extra SAN, key usage or EKU) than the profile
is as wrong as one that asks for less. Where the contract has no code of its own we answer:

* a CSR whose proof-of-possession signature does not verify, or that is signed with another hash than
  the profile's ``hash``: SignatureValidationFailed (the request's signature is what fails);
* a CSR without a keyUsage extension when the profile asks for usages: KeyUsageMismatch (there is no
  KeyUsageMissing);
* a key without a size (Ed25519): KeyLengthMismatch.
"""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import AttributeOID

from scep_server.emulator.codes import Code, Rejection
from scep_server.intune.contract import ChallengeSpec
from scep_server.pki.names import parse_name
from scep_server.pki.sans import UPN_OID

_KEY_USAGE_ATTRIBUTES = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign",
)
_BMP_STRING, _UNIVERSAL_STRING = 30, 28
_E = TypeVar("_E", bound=x509.ExtensionType)
_PARSE_ERRORS = (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


def load_csr(csr_der_b64: str) -> x509.CertificateSigningRequest:
    """The base64 DER PKCS#10 request, fully parsed (CertificateRequestDecodingFailed otherwise)."""
    try:
        der = base64.b64decode("".join(csr_der_b64.split()), validate=True)
        csr = x509.load_der_x509_csr(der)
        csr.extensions  # noqa: B018 - parse the extensionRequest now, not halfway through the comparison
    except (binascii.Error, *_PARSE_ERRORS):
        raise Rejection(Code.CERTIFICATE_REQUEST_DECODING_FAILED, "the certificate request is not a DER "
                        "PKCS#10 request in base64") from None
    return csr


def check_proof_of_possession(csr: x509.CertificateSigningRequest) -> None:
    """The CSR must be signed by the key it carries.

    Verified explicitly rather than with ``is_signature_valid``, which refuses SHA-1, and SHA-1 is a
    profile setting Intune offers (intune-api.md §7).
    """
    try:
        _verify_signature(csr)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        raise Rejection(Code.SIGNATURE_VALIDATION_FAILED, "the request's signature does not verify") from None


def _verify_signature(csr: x509.CertificateSigningRequest) -> None:
    key, parameters, algorithm = csr.public_key(), csr.signature_algorithm_parameters, csr.signature_hash_algorithm
    if isinstance(key, rsa.RSAPublicKey) and isinstance(parameters, padding.PKCS1v15 | padding.PSS) and algorithm:
        key.verify(csr.signature, csr.tbs_certrequest_bytes, parameters, algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey) and isinstance(parameters, ec.ECDSA):
        key.verify(csr.signature, csr.tbs_certrequest_bytes, parameters)
    elif not csr.is_signature_valid:
        raise InvalidSignature


def challenge_password(csr: x509.CertificateSigningRequest) -> str:
    """The challengePassword attribute (PKCS#9) as text; ChallengePasswordMissing when absent or empty."""
    try:
        attribute = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)
    except x509.AttributeNotFound:
        raise Rejection(Code.CHALLENGE_PASSWORD_MISSING, "the request has no challengePassword") from None
    encoding = {_BMP_STRING: "utf-16-be", _UNIVERSAL_STRING: "utf-32-be"}.get(getattr(attribute, "_type", 0), "utf-8")
    try:
        text = attribute.value.decode(encoding)
    except UnicodeDecodeError:
        raise Rejection(Code.CHALLENGE_DECODING_ERROR, "the challengePassword is not text") from None
    if not text.strip():
        raise Rejection(Code.CHALLENGE_PASSWORD_MISSING, "the challengePassword is empty")
    return text


def compare(csr: x509.CertificateSigningRequest, spec: ChallengeSpec) -> None:
    """Subject, SANs, key usage, key length, EKU and hash, in that order; raises the first mismatch."""
    _compare_subject(csr, spec)
    _compare_sans(csr, spec)
    _compare_key_usage(csr, spec)
    _compare_key_size(csr, spec)
    _compare_ekus(csr, spec)
    _compare_hash(csr, spec)


def _compare_subject(csr: x509.CertificateSigningRequest, spec: ChallengeSpec) -> None:
    expected = parse_name(spec.subject) if spec.subject else x509.Name([])
    if csr.subject == expected:
        return
    if not list(csr.subject):
        raise Rejection(Code.SUBJECT_NAME_MISSING, f"the request has no subject; the profile asks for {spec.subject!r}")
    raise Rejection(Code.SUBJECT_NAME_MISMATCH,
                    f"subject {csr.subject.rfc4514_string()!r} is not the profile's {expected.rfc4514_string()!r}")


def _compare_sans(csr: x509.CertificateSigningRequest, spec: ChallengeSpec) -> None:
    expected = {_normalise_san(kind, value) for kind, value in spec.sans}
    extension = _extension(csr, x509.SubjectAlternativeName)
    if extension is None:
        if expected:
            raise Rejection(Code.SUBJECT_ALT_NAME_MISSING,
                            f"the request has no SAN; the profile asks for {_show(expected)}")
        return
    actual = {_normalise_san(*_describe(name)) for name in extension}
    if actual != expected:
        raise Rejection(Code.SUBJECT_ALT_NAME_MISMATCH, f"SANs {_show(actual)} are not the profile's {_show(expected)}")


def _compare_key_usage(csr: x509.CertificateSigningRequest, spec: ChallengeSpec) -> None:
    extension = _extension(csr, x509.KeyUsage)
    actual = set() if extension is None else {a for a in _KEY_USAGE_ATTRIBUTES if getattr(extension, a)}
    if extension is not None and extension.key_agreement:
        actual |= {a for a in ("encipher_only", "decipher_only") if getattr(extension, a)}
    if actual != set(spec.key_usage):
        raise Rejection(Code.KEY_USAGE_MISMATCH,
                        f"key usage {sorted(actual)} is not the profile's {sorted(spec.key_usage)}")


def _compare_key_size(csr: x509.CertificateSigningRequest, spec: ChallengeSpec) -> None:
    key = csr.public_key()
    size = key.key_size if isinstance(key, rsa.RSAPublicKey) else None
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = key.curve.key_size
    if size != spec.key_size:
        raise Rejection(Code.KEY_LENGTH_MISMATCH, f"key size {size} is not the profile's {spec.key_size}")


def _compare_ekus(csr: x509.CertificateSigningRequest, spec: ChallengeSpec) -> None:
    expected = set(spec.extended_key_usage)
    extension = _extension(csr, x509.ExtendedKeyUsage)
    if extension is None:
        if expected:
            raise Rejection(Code.ENHANCED_KEY_USAGE_MISSING,
                            f"the request has no EKU; the profile asks for {sorted(expected)}")
        return
    actual = {oid.dotted_string for oid in extension}
    if actual != expected:
        raise Rejection(Code.ENHANCED_KEY_USAGE_MISMATCH,
                        f"EKUs {sorted(actual)} are not the profile's {sorted(expected)}")


def _compare_hash(csr: x509.CertificateSigningRequest, spec: ChallengeSpec) -> None:
    try:
        algorithm = csr.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    name = algorithm.name if algorithm is not None else "none"
    if name != spec.hash:
        raise Rejection(Code.SIGNATURE_VALIDATION_FAILED,
                        f"the request is signed with {name}; the profile asks for {spec.hash}")


def _extension(csr: x509.CertificateSigningRequest, kind: type[_E]) -> _E | None:
    try:
        return csr.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _describe(name: x509.GeneralName) -> tuple[str, str]:
    if isinstance(name, x509.RFC822Name):
        return "email", name.value
    if isinstance(name, x509.DNSName):
        return "dns", name.value
    if isinstance(name, x509.UniformResourceIdentifier):
        return "uri", name.value
    if isinstance(name, x509.OtherName) and name.type_id == UPN_OID:
        upn = _der_utf8_string(name.value)
        if upn is not None:
            return "upn", upn
    return "other", str(name)


def _normalise_san(kind: str, value: str) -> tuple[str, str]:
    # Mail addresses, UPNs and DNS names compare case-insensitively in practice; URIs exactly.
    return kind, value if kind in ("uri", "other") else value.lower()


def _der_utf8_string(der: bytes) -> str | None:
    """The text of a DER UTF8String (tag 12), as a UPN otherName carries it; None if it is not one."""
    if len(der) < 2 or der[0] != 0x0C:
        return None
    length, offset = der[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, offset = int.from_bytes(der[2 : 2 + count], "big"), 2 + count
    if offset + length != len(der):
        return None
    try:
        return der[offset:].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _show(sans: set[tuple[str, str]]) -> str:
    return "[" + ", ".join(f"{kind}:{value}" for kind, value in sorted(sans)) + "]"
